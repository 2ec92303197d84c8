"""Statistics and output: JSON (every sample), Markdown table, PNG chart, terminal summary."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .workloads import FLOOR, Metric

OURS, THEIRS = "pycontainerd", "containerd"


@dataclasses.dataclass
class Stats:
    n: int
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, xs: Sequence[float]) -> Stats | None:
        return cls(len(xs), statistics.median(xs), min(xs), max(xs)) if xs else None


def ratio(m: Metric) -> dict[str, float] | None:
    """ours/containerd: ratio of medians, and the spread of the per-run (paired) ratios."""
    a, b = m.samples.get(OURS, []), m.samples.get(THEIRS, [])
    if not a or not b or statistics.median(b) == 0:
        return None
    out = {"median_ratio": statistics.median(a) / statistics.median(b)}
    pairs = [x / y for x, y in zip(a, b, strict=False) if y > 0]
    if pairs:
        out["pair_min"], out["pair_max"] = min(pairs), max(pairs)
        if len(pairs) >= 4:
            q = statistics.quantiles(pairs, n=4)
            out["pair_p25"], out["pair_p75"] = q[0], q[2]
    return out


def ordered(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
    """W1 … W7 (stable: metrics of one workload keep their recording order)."""
    return {m.key: m for m in sorted(metrics.values(), key=lambda m: m.workload)}


def to_json(metrics: Mapping[str, Metric], meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": dict(meta), "metrics": {}}
    for key, m in metrics.items():
        stats = {who: dataclasses.asdict(s) for who, xs in m.samples.items() if (s := Stats.of(xs))}
        out["metrics"][key] = {"workload": m.workload, "title": m.title, "unit": m.unit, "samples": m.samples,
                               "stats": stats, "errors": m.errors, "ratio_ours_over_containerd": ratio(m),
                               "floor_of": m.floor_of}
    return out


def _fmt(s: Stats | None, unit: str) -> str:
    if s is None:
        return "—"
    digits = 3 if unit == "s" else 1
    return f"{s.median:.{digits}f} ({s.min:.{digits}f}–{s.max:.{digits}f}) n={s.n}"


def _cell(m: Metric, who: str) -> str:
    if who in m.errors and not m.samples.get(who):
        return "not yet: " + m.errors[who].replace("|", "\\|").replace("\n", " ")[:160]
    return _fmt(Stats.of(m.samples.get(who, [])), m.unit)


def _ratio_cell(m: Metric) -> str:
    r = ratio(m)
    if r is None:
        return "—"
    spread = ""
    if "pair_p25" in r:
        spread = f" (IQR {r['pair_p25']:.2f}–{r['pair_p75']:.2f}, range {r['pair_min']:.2f}–{r['pair_max']:.2f})"
    elif "pair_min" in r:
        spread = f" (range {r['pair_min']:.2f}–{r['pair_max']:.2f})"
    return f"×{r['median_ratio']:.2f}{spread}"


def markdown(metrics: Mapping[str, Metric], meta: Mapping[str, Any]) -> str:
    lines = [f"# pycontainerd vs containerd — {meta.get('started', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("started", "args")]
    lines += ["", "Median (min–max) per daemon; ratio = median(ours)/median(containerd), with the spread of "
              "the per-run A/B pair ratios.", "",
              f"| metric | unit | {OURS} | {THEIRS} | floor | ours/containerd |",
              "|---|---|---|---|---|---|"]
    floors = {m.floor_of: m for m in metrics.values() if m.floor_of}
    for key, m in metrics.items():
        if m.floor_of:
            continue
        floor = floors.get(key)
        floor_cell = _fmt(Stats.of(floor.samples.get(FLOOR, [])), floor.unit) if floor else ""
        lines.append(f"| {m.title} | {m.unit} | {_cell(m, OURS)} | {_cell(m, THEIRS)} | {floor_cell} | "
                     f"{_ratio_cell(m)} |")
    for m in floors.values():
        lines.append(f"| {m.title} | {m.unit} | | | {_cell(m, FLOOR)} | |")
    notes = [f"- {m.key} {who}: {err}" for m in metrics.values() for who, err in m.errors.items()]
    if notes:
        lines += ["", "## Errors and notes", "", *notes]
    return "\n".join(lines) + "\n"


def terminal(metrics: Mapping[str, Metric]) -> str:
    metrics = ordered(metrics)
    rows = [("metric", OURS, THEIRS, "ours/ctrd")]
    for m in metrics.values():
        if m.floor_of:
            rows.append((m.title, "", "", _fmt(Stats.of(m.samples.get(FLOOR, [])), m.unit)))
            continue
        ours = _cell(m, OURS)
        rows.append((f"{m.title} [{m.unit}]", ours[:48], _cell(m, THEIRS)[:48],
                     _ratio_cell(m).split(" (")[0]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def chart(metrics: Mapping[str, Metric], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in metrics.values() if not m.floor_of]
    floors = {m.floor_of: m for m in metrics.values() if m.floor_of}
    standalone_floor = [m for m in metrics.values() if m.floor_of and m.floor_of not in metrics]
    panels += standalone_floor
    if not panels:
        return
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = {OURS: "#d9822b", THEIRS: "#2b6cd9", FLOOR: "#777777"}
    for ax, m in zip(axes.flat, panels, strict=False):
        whos = [FLOOR] if m.floor_of else [OURS, THEIRS]
        data, labels = [], []
        for who in whos:
            xs = m.samples.get(who, [])
            data.append(xs if xs else [float("nan")])
            labels.append(who if xs else f"{who}\n(not yet)")
        if max(len(m.samples.get(w, [])) for w in whos) <= 2:
            # too few samples for a box: bars at the median, whiskers to min/max
            real = [m.samples.get(w, []) for w in whos]
            meds = [statistics.median(xs) if xs else 0.0 for xs in real]
            lo = [med - min(xs) if xs else 0.0 for med, xs in zip(meds, real, strict=True)]
            hi = [max(xs) - med if xs else 0.0 for med, xs in zip(meds, real, strict=True)]
            ax.bar(range(1, len(data) + 1), meds, yerr=[lo, hi], capsize=4, width=0.5,
                   color=[colors[w] for w in whos], alpha=0.7)
            for k, med in enumerate(meds, start=1):
                if med:
                    ax.annotate(f"{med:.3g}", (k, med), ha="center", va="bottom", fontsize=7)
        else:
            bp = ax.boxplot(data, showfliers=True, patch_artist=True, widths=0.5)
            for patch, who in zip(bp["boxes"], whos, strict=True):
                patch.set_facecolor(colors[who])
                patch.set_alpha(0.55)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        for k, xs in enumerate(data, start=1):
            ax.plot([k] * len(xs), xs, ".", color="black", markersize=2, alpha=0.6)
        fl = floors.get(m.key)
        if fl and fl.samples.get(FLOOR):
            y = statistics.median(fl.samples[FLOOR])
            ax.axhline(y, color=colors[FLOOR], linestyle="--", linewidth=1)
            ax.annotate(f"floor: runc run {y * 1000:.0f} ms", (0.02, y), xycoords=("axes fraction", "data"),
                        fontsize=7, color=colors[FLOOR], va="bottom")
        ax.set_title(m.title, fontsize=9)
        ax.set_ylabel(m.unit)
        finite = [x for xs in data for x in xs if x == x]
        ax.set_ylim(0, max(finite) * 1.15 if finite else 1)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("pycontainerd vs containerd (same ctr, runc, overlayfs; A/B alternated)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(metrics: Mapping[str, Metric], meta: Mapping[str, Any], outdir: Path, stamp: str) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    metrics = ordered(metrics)
    paths = [outdir / f"bench-{stamp}.json", outdir / f"bench-{stamp}.md", outdir / f"bench-{stamp}.png"]
    paths[0].write_text(json.dumps(to_json(metrics, meta), indent=1))
    paths[1].write_text(markdown(metrics, meta))
    chart(metrics, paths[2])
    for p in paths:
        latest = outdir / f"latest{p.suffix}"
        latest.unlink(missing_ok=True)
        latest.write_bytes(p.read_bytes())
    return paths
