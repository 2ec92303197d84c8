"""Statistics and output: JSON (every raw sample), Markdown table, PNG chart, terminal summary.

The JSON that a run writes is the source of every table: ``python -m bench.report JSON`` prints
the table made from it, ``--readme README.md`` writes it into the README between the markers
``<!-- bench:start JSON -->`` and ``<!-- bench:end -->`` (the start marker names the JSON), and
``--check`` fails when the README's table is not the one the JSON makes (a unit test runs that
check, so a hand-edited table fails).  ``--publish`` first copies a run's JSON (default
``bench/results/latest.json``) to ``bench/published/`` (committed) and points the README at it.

Pairs.  The two daemons' samples with the same run index form an A/B pair.  Where both daemons
were measured, the table uses paired samples only: a run where either side failed (or is
missing) is dropped from both and counted under "pairs (dropped)"; medians, ranges and the
ratio all come from the same pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .workloads import FLOOR, Metric, Sample

OURS, THEIRS = "pycontainerd", "containerd"
SCHEMA = 2
START, END = "<!-- bench:start", "<!-- bench:end -->"
REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "bench" / "published"


@dataclasses.dataclass
class Stats:
    n: int
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, xs: Sequence[float]) -> Stats | None:
        return cls(len(xs), statistics.median(xs), min(xs), max(xs)) if xs else None


def pairs(m: Metric) -> tuple[list[tuple[int, float, float]], list[tuple[int, str]]]:
    """(run, ours, containerd) for every run both measured; and the dropped runs with why."""
    a = {s.run: s for s in m.samples.get(OURS, [])}
    b = {s.run: s for s in m.samples.get(THEIRS, [])}
    ok: list[tuple[int, float, float]] = []
    dropped: list[tuple[int, str]] = []
    for run in sorted(set(a) | set(b)):
        sa, sb = a.get(run), b.get(run)
        if sa and sb and sa.value is not None and sb.value is not None:
            ok.append((run, sa.value, sb.value))
            continue
        why = []
        for who, smp in ((OURS, sa), (THEIRS, sb)):
            if smp is None:
                why.append(f"{who} not measured")
            elif smp.value is None:
                why.append(f"{who} failed: {smp.error[:120]}")
        dropped.append((run, "; ".join(why)))
    return ok, dropped


def both(m: Metric) -> bool:
    return bool(m.values(OURS)) and bool(m.values(THEIRS))


def used(m: Metric, who: str) -> list[float]:
    """The samples the table shows: the paired ones when both daemons were measured."""
    if both(m):
        ok, _ = pairs(m)
        return [x if who == OURS else y for _, x, y in ok]
    return m.values(who)


def ratio(m: Metric) -> dict[str, float] | None:
    """ours/containerd: ratio of the medians of the pairs, and the spread of the per-pair ratios."""
    ok, _ = pairs(m) if both(m) else ([], [])
    if not ok or statistics.median(y for _, _, y in ok) == 0:
        return None
    out = {"median_ratio": statistics.median(x for _, x, _ in ok) / statistics.median(y for _, _, y in ok)}
    rs = [x / y for _, x, y in ok if y > 0]
    if rs:
        out["pair_min"], out["pair_max"] = min(rs), max(rs)
        if len(rs) >= 4:
            q = statistics.quantiles(rs, n=4)
            out["pair_p25"], out["pair_p75"] = q[0], q[2]
    return out


def ordered(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
    """W1, W2, … W10 in number order (stable: metrics of one workload keep their recording order)."""
    def number(m: Metric) -> tuple[int, str]:
        digits = m.workload.lstrip("W")
        return (int(digits), "") if digits.isdigit() else (1 << 30, m.workload)

    return {m.key: m for m in sorted(metrics.values(), key=number)}


# -- JSON ----------------------------------------------------------------------------------------

def to_json(metrics: Mapping[str, Metric], meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": SCHEMA, "meta": dict(meta), "metrics": {}}
    for key, m in metrics.items():
        ok, dropped = pairs(m)
        summary = {who: dataclasses.asdict(s) for who in m.samples if (s := Stats.of(used(m, who)))}
        out["metrics"][key] = {
            "workload": m.workload, "name": m.name, "title": m.title, "unit": m.unit, "command": m.command,
            "floor_of": m.floor_of, "errors": m.errors,
            "samples": {who: [dataclasses.asdict(s) for s in xs] for who, xs in m.samples.items()},
            "derived": {"stats_of_used_samples": summary, "ratio_ours_over_containerd": ratio(m),
                        "pairs": len(ok), "dropped": dropped},
        }
    return out


def from_json(data: Mapping[str, Any]) -> dict[str, Metric]:
    if data.get("schema") != SCHEMA:
        raise ValueError(f"bench JSON schema {data.get('schema')!r}, this report reads {SCHEMA}")
    out: dict[str, Metric] = {}
    for key, d in data["metrics"].items():
        m = Metric(d["workload"], d["name"], d["title"], d["unit"], errors=dict(d["errors"]),
                   floor_of=d["floor_of"], command=d.get("command", ""))
        m.samples = {who: [Sample(**s) for s in xs] for who, xs in d["samples"].items()}
        out[key] = m
    return out


# -- Markdown ------------------------------------------------------------------------------------

def _digits(unit: str) -> int:
    return 3 if unit == "s" else 1


def _fmt(s: Stats | None, unit: str) -> str:
    if s is None:
        return "—"
    d = _digits(unit)
    return f"{s.median:.{d}f} ({s.min:.{d}f}–{s.max:.{d}f}) n={s.n}"


def _cell(m: Metric, who: str) -> str:
    if who in m.errors and not m.values(who):
        return "not yet: " + m.errors[who].replace("|", "\\|").replace("\n", " ")[:160]
    return _fmt(Stats.of(used(m, who)), m.unit)


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


def _pairs_cell(m: Metric) -> str:
    if not both(m):
        return ""
    ok, dropped = pairs(m)
    return f"{len(ok)} ({len(dropped)})"


def _deferred_cell(m: Metric) -> str:
    if m.unit != "s":
        return ""
    parts = []
    for who in (OURS, THEIRS):
        ds = [s.deferred_s for s in m.samples.get(who, []) if s.value is not None and s.deferred_s is not None]
        parts.append(f"{statistics.median(ds):.3f} ({max(ds):.3f})" if ds else "—")
    return "" if parts == ["—", "—"] else " / ".join(parts)


def _shims(m: Metric) -> str:
    """For a memory metric measured with shims counted: how many served the containers, per daemon."""
    per = []
    for who, short in ((OURS, "ours"), (THEIRS, "containerd")):
        ok = [s for s in m.samples.get(who, []) if s.value is not None and "shims" in s.extra]
        n = sorted({int(s.extra["shims"]) for s in ok})
        if n:
            per.append(f"{short} {'/'.join(map(str, n))}")
    return f" (shim and helper processes: {', '.join(per)})" if per else ""


def table(metrics: Mapping[str, Metric]) -> list[str]:
    lines = [f"| metric | unit | {OURS} | {THEIRS} | floor | ours/containerd | pairs (dropped) "
             f"| deferred s: ours / containerd |",
             "|---|---|---|---|---|---|---|---|"]
    metrics = ordered(metrics)
    floors = {m.floor_of: m for m in metrics.values() if m.floor_of}
    for key, m in metrics.items():
        if m.floor_of:
            continue
        floor = floors.get(key)
        floor_cell = _fmt(Stats.of(floor.values(FLOOR)), floor.unit) if floor else ""
        lines.append(f"| {m.title}{_shims(m)} | {m.unit} | {_cell(m, OURS)} | {_cell(m, THEIRS)} | {floor_cell} | "
                     f"{_ratio_cell(m)} | {_pairs_cell(m)} | {_deferred_cell(m)} |")
    for m in floors.values():
        lines.append(f"| {m.title} | {m.unit} | | | {_cell(m, FLOOR)} | | | |")
    return lines


def notes(metrics: Mapping[str, Metric], meta: Mapping[str, Any] | None = None) -> list[str]:
    out = []
    grouping = (meta or {}).get("shim_grouping")
    if isinstance(grouping, dict) and "W5.pss_per_container" in metrics:
        out.append("- Shim grouping (W5): " + "; ".join(f"{who}: {how}" for who, how in grouping.items()))
    for m in ordered(metrics).values():
        _, dropped = pairs(m) if both(m) else ([], [])
        for run, why in dropped:
            out.append(f"- {m.key} run {run} dropped: {why}")
        unsettled = [(who, s.run) for who, xs in m.samples.items() for s in xs if not s.settled]
        for who, run in unsettled:
            out.append(f"- {m.key} {who} run {run}: not quiescent within the deadline after the sample")
        out += [f"- {m.key} {who}: {err}".replace("\n", " ") for who, err in m.errors.items()]
    return out


def first_look(metrics: Mapping[str, Metric]) -> float | None:
    looks = [s.first_look_s for m in metrics.values() for xs in m.samples.values() for s in xs
             if s.first_look_s is not None]
    return statistics.median(looks) if looks else None


def header(meta: Mapping[str, Any], metrics: Mapping[str, Metric]) -> list[str]:
    load = meta.get("loadavg_start", "?"), meta.get("loadavg_end", "?")
    lines = [f"Run {meta.get('started', '?')} at {meta.get('git', '?')}: {meta.get('machine', '?')}, "
             f"cgroups {meta.get('cgroups', '?')}, {meta.get('containerd', '?')}, {meta.get('runc', '?')}; "
             f"big image: {meta.get('big_image', '?')}. Load average (1 min) at start / end: "
             f"{load[0]} / {load[1]}.",
             ""]
    if meta.get("note"):
        lines += [str(meta["note"]), ""]
    lines += ["Median (min–max) of the samples of runs where both daemons succeeded (A/B pairs by run "
              "index; a run where either failed is dropped from both); ratio = median(ours)/median(containerd) "
              "with the spread of the per-pair ratios; deferred = median (max) time after a sample until the "
              "daemon was quiescent again (no runc, process tree, bundle dirs and database files unchanged, "
              "CPU idle: `bench/quiesce.py`); every sample starts with both daemons quiescent."
              + (f" Deferred 0 means done by the first look, {look * 1000:.0f} ms (median) after the sample."
                 if (look := first_look(metrics)) is not None else ""), ""]
    return lines


def markdown(metrics: Mapping[str, Metric], meta: Mapping[str, Any]) -> str:
    lines = [f"# pycontainerd vs containerd — {meta.get('started', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("started", "args", "commands")]
    lines += ["", *table(metrics)]
    if n := notes(metrics, meta):
        lines += ["", "## Notes", "", *n]
    return "\n".join(lines) + "\n"


def readme_block(data: Mapping[str, Any]) -> list[str]:
    """What goes between the README's markers, from a run's JSON alone."""
    metrics = from_json(data)
    lines = [*header(data["meta"], metrics), *table(metrics)]
    if n := notes(metrics, data["meta"]):
        lines += ["", *n]
    return lines


def render_readme(readme: str, json_rel: str, data: Mapping[str, Any]) -> str:
    """`readme` with the block between the markers replaced by the table made from `data`."""
    lines = readme.splitlines()
    try:
        i = next(k for k, ln in enumerate(lines) if ln.startswith(START))
        j = next(k for k, ln in enumerate(lines) if ln.strip() == END and k > i)
    except StopIteration:
        raise ValueError(f"README has no {START} … {END} markers") from None
    block = [f"{START} {json_rel} -->", *readme_block(data), END]
    return "\n".join(lines[:i] + block + lines[j + 1:]) + "\n"


def readme_source(readme: str) -> str:
    """The JSON the README's table says it was made from (path relative to the repository)."""
    for ln in readme.splitlines():
        if ln.startswith(START):
            return ln[len(START):].replace("-->", "").strip()
    raise ValueError(f"README has no {START} marker")


def terminal(metrics: Mapping[str, Metric]) -> str:
    metrics = ordered(metrics)
    rows = [("metric", OURS, THEIRS, "ours/ctrd")]
    for m in metrics.values():
        if m.floor_of:
            rows.append((m.title, "", "", _fmt(Stats.of(m.values(FLOOR)), m.unit)))
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
            xs = used(m, who)
            data.append(xs if xs else [float("nan")])
            labels.append(who if xs else f"{who}\n(not yet)")
        if max(len(used(m, w)) for w in whos) <= 2:
            # too few samples for a box: bars at the median, whiskers to min/max
            real = [used(m, w) for w in whos]
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
        if fl and fl.values(FLOOR):
            y = statistics.median(fl.values(FLOOR))
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
    paths[0].write_text(json.dumps(to_json(metrics, meta), indent=1, ensure_ascii=False) + "\n")
    paths[1].write_text(markdown(metrics, meta))
    chart(metrics, paths[2])
    for p in paths:
        latest = outdir / f"latest{p.suffix}"
        latest.unlink(missing_ok=True)
        latest.write_bytes(p.read_bytes())
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="?", type=Path, help="a run's JSON (default: the one the README names)")
    ap.add_argument("--readme", type=Path, default=None, help="write the table into this README's markers")
    ap.add_argument("--check", action="store_true", help="fail if the README's table differs from the JSON's")
    ap.add_argument("--publish", action="store_true",
                    help="copy the JSON (default bench/results/latest.json) to bench/published/ and use it")
    ap.add_argument("--note", default=None, help="with --publish: a sentence shown above the table "
                    "(e.g. that the machine was loaded); stored in the published JSON's meta")
    args = ap.parse_args(argv)
    readme_path = args.readme or (REPO / "README.md" if (args.check or args.publish) else None)
    src: Path | None = args.json
    if args.publish:
        src = src or REPO / "bench" / "results" / "latest.json"
        data = json.loads(src.read_text())
        if args.note:
            data["meta"]["note"] = args.note
        stamp = str(data["meta"].get("stamp") or src.stem.removeprefix("bench-"))
        PUBLISHED.mkdir(exist_ok=True)
        dest = PUBLISHED / f"bench-{stamp}.json"
        dest.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        print(f"published {src} as {dest.relative_to(REPO)}")
        src = dest
    if src is None:
        if readme_path is None:
            ap.error("name a JSON, or --readme/--check")
        src = REPO / readme_source(readme_path.read_text())
    data = json.loads(src.read_text())
    if readme_path is None:
        print("\n".join(readme_block(data)))
        return 0
    rel = str(src.resolve().relative_to(REPO)) if src.resolve().is_relative_to(REPO) else str(src)
    old = readme_path.read_text()
    new = render_readme(old, rel, data)
    if args.check:
        if new != old:
            print(f"{readme_path}: the benchmark table is not the one {rel} makes "
                  "(run: python -m bench.report --readme README.md)", file=sys.stderr)
            return 1
        print(f"{readme_path}: table matches {rel}")
        return 0
    readme_path.write_text(new)
    print(f"wrote the table from {rel} into {readme_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
