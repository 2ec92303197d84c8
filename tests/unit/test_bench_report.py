"""The benchmark is traceable: the README's table is the one the committed JSON makes, A/B pairs
are matched by run (a failed run drops its pair, never shifts the later ones), and a sample's
deferred work is measured until the daemon is quiescent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import quiesce, report
from bench.workloads import Metric, Sample
from tests.fixtures.procs import kill_pids

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_table_is_generated_from_the_committed_json() -> None:
    readme = (REPO / "README.md").read_text()
    source = REPO / report.readme_source(readme)
    assert source.is_relative_to(REPO / "bench" / "published"), source
    data = json.loads(source.read_text())
    assert report.render_readme(readme, str(source.relative_to(REPO)), data) == readme, (
        "README's benchmark table differs from the one its JSON makes: python -m bench.report --readme README.md")
    assert report.main(["--check"]) == 0


def test_a_hand_edit_of_the_table_is_caught(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    row = next(ln for ln in readme.splitlines() if ln.startswith("| W"))
    cells = row.split(" | ")
    cells[2] = "0.001 (0.001–0.001) n=1" if cells[2] != "0.001 (0.001–0.001) n=1" else "0.002 (0.002–0.002) n=1"
    edited = readme.replace(row, " | ".join(cells), 1)
    assert edited != readme
    copy = tmp_path / "README.md"
    copy.write_text(edited)
    src = REPO / report.readme_source(readme)
    assert report.main([str(src), "--readme", str(copy), "--check"]) == 1


def metric(ours: list[Sample], theirs: list[Sample]) -> Metric:
    m = Metric("W3", "run", "W3 t", "s")
    m.samples = {report.OURS: ours, report.THEIRS: theirs}
    return m


def test_pairs_are_matched_by_run_and_a_failed_run_drops_its_pair() -> None:
    ours = [Sample(0, 1.0), Sample(1, error="boom"), Sample(2, 3.0), Sample(3, 4.0)]
    theirs = [Sample(0, 10.0), Sample(1, 20.0), Sample(2, 30.0), Sample(3, 40.0)]
    m = metric(ours, theirs)
    ok, dropped = report.pairs(m)
    assert ok == [(0, 1.0, 10.0), (2, 3.0, 30.0), (3, 4.0, 40.0)]  # not (3.0, 20.0): no shift
    assert dropped == [(1, "pycontainerd failed: boom")]
    assert report.used(m, report.THEIRS) == [10.0, 30.0, 40.0]  # run 1 dropped from both sides
    r = report.ratio(m)
    assert r is not None and r["pair_min"] == r["pair_max"] == 0.1
    assert report._pairs_cell(m) == "3 (1)"


def test_a_json_round_trip_keeps_every_sample() -> None:
    m = metric([Sample(0, 1.0, deferred_s=0.2, extra={"shims": 4})], [Sample(0, 2.0, deferred_s=0.0)])
    data = json.loads(json.dumps(report.to_json({m.key: m}, {"started": "x"})))
    back = report.from_json(data)[m.key]
    assert back.samples == m.samples
    assert report.table({m.key: back}) == report.table({m.key: m})


class FakeTarget:
    """Just what quiesce reads: a 'daemon' pid with no shims and no dirs."""

    def __init__(self, pid: int) -> None:
        self.label, self.daemon_pid, self.base = "fake", pid, None

    def shim_pids(self) -> list[int]:
        return []


def test_deferred_work_is_measured_until_the_process_tree_settles() -> None:
    # the 'daemon' is busy (CPU) for 0.4 s after it started, then idle
    busy = "import time\nt = time.monotonic() + 0.4\nwhile time.monotonic() < t: pass\ntime.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", busy])
    try:
        got = quiesce.settle([FakeTarget(proc.pid)])["fake"]  # type: ignore[list-item]
        assert got.quiescent
        assert 0.3 <= got.deferred_s <= 5, got
        again = quiesce.settle([FakeTarget(proc.pid)])["fake"]  # type: ignore[list-item]
        assert again.quiescent and again.deferred_s == 0
    finally:
        kill_pids([proc.pid])
        proc.wait(10)
