"""The benchmark harness: statistics/report logic (pure) and a short real run against containerd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.workloads import FLOOR, Metric, Sample

REPO = Path(__file__).resolve().parents[2]


def _s(*xs: float) -> list[Sample]:
    return [Sample(i, x) for i, x in enumerate(xs)]


def _metrics() -> dict[str, Metric]:
    run = Metric("W3", "run", "W3 run", "s", {"pycontainerd": _s(0.2, 0.3, 0.25, 0.22), "containerd": _s(*[0.1] * 4)})
    floor = Metric("W7", "runc_run", "W7 floor", "s", {FLOOR: _s(0.03, 0.04)}, floor_of="W3.run")
    fetch = Metric("W1", "fetch", "W1 fetch", "s", {"containerd": _s(1.0, 2.0)},
                   errors={"pycontainerd": "CtrError: ctr content fetch → exit 1: unimplemented | x"})
    return {m.key: m for m in (run, floor, fetch)}


def test_ratio_and_tables(tmp_path: Path) -> None:
    ms = _metrics()
    r = report.ratio(ms["W3.run"])
    assert r is not None
    assert r["median_ratio"] == pytest.approx(0.235 / 0.1)
    assert r["pair_min"] == pytest.approx(2.0)
    assert r["pair_max"] == pytest.approx(3.0)
    assert report.ratio(ms["W1.fetch"]) is None
    md = report.markdown(ms, {"started": "now"})
    assert "not yet: CtrError" in md
    assert "\\|" in md  # pipes in errors are escaped
    assert list(report.ordered(ms)) == ["W1.fetch", "W3.run", "W7.runc_run"]
    paths = report.write_all(ms, {"started": "now"}, tmp_path, "x")
    data = json.loads(paths[0].read_text())
    assert [x["value"] for x in data["metrics"]["W3.run"]["samples"]["containerd"]] == [0.1] * 4
    assert data["metrics"]["W3.run"]["derived"]["stats_of_used_samples"]["pycontainerd"]["n"] == 4
    assert report.from_json(data)["W3.run"].samples == ms["W3.run"].samples
    assert paths[2].stat().st_size > 10_000
    assert (tmp_path / "latest.md").read_text() == paths[1].read_text()
    assert "W3 run" in report.terminal(ms)


@pytest.mark.root
def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    """A short real run: containerd only (our daemon's progress must not break this test)."""
    r = subprocess.run([sys.executable, "-m", "bench", "--targets", "containerd", "--workloads", "W3,W6,W7",
                        "--runs", "2", "--output", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert len(data["metrics"]["W3.run"]["samples"]["containerd"]) == 2
    assert len(data["metrics"]["W7.runc_run"]["samples"][FLOOR]) == 2
    assert data["metrics"]["W6.idle_start"]["samples"]["containerd"][0]["value"] > 1
    assert len(data["metrics"]["W6.idle_start"]["samples"]["containerd"]) == 3  # W6: at least 3 runs
    assert all(x["deferred_s"] is not None for x in data["metrics"]["W3.run"]["samples"]["containerd"])
    assert (tmp_path / "latest.png").exists()


@pytest.mark.root
def test_cri_workload_runs_end_to_end(tmp_path: Path) -> None:
    """W10 (the CRI side by side) on both daemons, two runs: every sample there, none failed.
    Times are the benchmark's business, never asserted here."""
    r = subprocess.run([sys.executable, "-m", "bench", "--workloads", "W10", "--runs", "2", "--output", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    for key in ("W10.runp", "W10.create_start", "W10.stopp_rmp"):
        m = data["metrics"][key]
        assert not m.get("errors"), (key, m.get("errors"))
        for who in ("pycontainerd", "containerd"):
            samples = m["samples"][who]
            assert [s["run"] for s in samples] == [0, 1], (key, who, samples)
            assert all(s["value"] is not None and s["value"] > 0 for s in samples), (key, who, samples)
