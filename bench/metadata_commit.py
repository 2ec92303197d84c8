"""Throughput of batched metadata writes: concurrent ``Content.Update`` label writes.

    python -m bench.metadata_commit [--modes FULL,NORMAL,unbatched] [--concurrency 1,8,32] [--writes 2000]

Each mode opens a fresh database on ``--dir`` (default /var/tmp: a real disk, as the daemon
root is), inserts ``--records`` content records and then runs ``--writes`` label updates
through the namespaced content store from ``C`` coroutines at once (each updating its own
records in turn).  Modes: ``FULL`` / ``NORMAL`` run the group commit with that
``PRAGMA synchronous`` (``Database.SYNC_BATCHED``); ``unbatched`` sends every update as an
ordinary (``FULL``) write, one transaction and one sync each: what the group commit saves.
Prints writes/s, the median and 99th percentile latency of one update, and the transactions
(``COMMIT``s) it took.  Not part of ``make bench``; used to measure db.py's group commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycontainerd.content.interfaces import Info
from pycontainerd.content.local import LocalStore
from pycontainerd.metadata.content import ContentStore
from pycontainerd.metadata.db import Database, dumps, ensure_namespace, now_ns


@contextlib.contextmanager
def batched_sync(mode: str) -> Iterator[None]:
    """Set ``Database.SYNC_BATCHED`` (or make batched writes ordinary ones) for one run."""
    old = Database.SYNC_BATCHED
    old_write = Database.write

    async def unbatched(self: Database, fn: Any, *, batch: bool = False, before_commit: Any = None) -> Any:
        return await old_write(self, fn, batch=False, before_commit=before_commit)

    try:
        if mode == "unbatched":
            Database.write = unbatched  # type: ignore[method-assign]
        else:
            Database.SYNC_BATCHED = mode
        yield
    finally:
        Database.SYNC_BATCHED = old
        Database.write = old_write  # type: ignore[method-assign]


async def one_run(base: Path, mode: str, concurrency: int, writes: int, records: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="pycd-metabench-", dir=base))
    try:
        db = Database(root / "meta.db")
        await db.open()
        local = LocalStore(root / "content")
        await asyncio.to_thread(local.setup_sync)
        digests = [f"sha256:{i:064x}" for i in range(records)]

        def fill(conn: sqlite3.Connection) -> None:
            ensure_namespace(conn, "bench")
            ts = now_ns()
            conn.executemany("INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) "
                             "VALUES ('bench', ?, 1, ?, ?, ?)", [(d, dumps({}), ts, ts) for d in digests])

        await db.write(fill)
        ns = ContentStore(db, local).namespaced("bench")
        commits = 0
        assert db._write_conn is not None

        def trace(sql: str) -> None:
            nonlocal commits
            commits += sql == "COMMIT"

        db._write_conn.set_trace_callback(trace)
        latencies: list[float] = []
        per_worker = writes // concurrency

        async def worker(w: int) -> None:
            for k in range(per_worker):
                d = digests[(w + k * concurrency) % records]
                t0 = time.perf_counter()
                await ns.update(Info(digest=d, size=0, labels={"bench/w": f"{w}-{k}"}), ["labels.bench/w"])
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        with batched_sync(mode):
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
        await asyncio.to_thread(db.close)
        n = len(latencies)
        latencies.sort()
        return {"mode": mode, "concurrency": concurrency, "writes": n, "wall_s": wall, "writes_per_s": n / wall,
                "p50_ms": statistics.median(latencies) * 1000, "p99_ms": latencies[int(n * 0.99) - 1] * 1000,
                "commits": commits}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.metadata_commit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="NORMAL,FULL,unbatched")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--writes", type=int, default=1024)
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="runs per cell, alternating modes; the median is printed")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    conc = [int(c) for c in args.concurrency.split(",")]
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        for c in conc:
            for mode in modes:
                runs.append(asyncio.run(one_run(args.dir, mode, c, args.writes, args.records)))
    print(f"{'mode':<10} {'conc':>4} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'commits':>7}"
          f"  (median of {args.repeat})")
    for c in conc:
        for mode in modes:
            cell = [r for r in runs if r["mode"] == mode and r["concurrency"] == c]
            med = {k: statistics.median(r[k] for r in cell) for k in ("writes_per_s", "p50_ms", "p99_ms", "commits")}
            print(f"{mode:<10} {c:>4} {med['writes_per_s']:>9.0f} {med['p50_ms']:>7.2f} {med['p99_ms']:>7.2f} "
                  f"{med['commits']:>7.0f}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
