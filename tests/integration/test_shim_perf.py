"""Shim start latency and memory: measured with real runc, printed (run with -s), bounded.

Numbers this reports (see the shim report): warm launch latency, a full
launch/create/start/wait/delete/shutdown cycle of ``true``, a fresh interpreter importing
the shim (what a launcher-less design would pay per container), and PSS per running shim
from /proc/PID/smaps_rollup.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.events import Exchange
from pycontainerd.runtime.shim_client import ShimLauncher
from pycontainerd.runtime.v2 import ShimManager, TaskShim
from tests.fixtures.procs import pss_kib, uss_kib

from .shim_fixtures import busybox  # noqa: F401  (session fixture)
from .shim_support import cleanup_container, make_bundle, pid_alive, poll_until

pytestmark = pytest.mark.root


def test_shim_latency_and_memory(tmp_path: Path, busybox: tuple[Path, dict[str, Any]]) -> None:  # noqa: F811
    rootfs, spec = busybox
    address = str(tmp_path / "d.sock")
    runc_root = str(tmp_path / "runc")
    runtime_root = os.path.join(runc_root, "perf")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    started: list[tuple[str, int, Path]] = []
    report: dict[str, float] = {}
    launcher = ShimLauncher()

    manager: ShimManager | None = None

    async def launch(cid: str, bundle: Path) -> TaskShim:
        assert manager is not None
        return await manager.launch_forked(
            namespace="perf", container_id=cid, bundle=bundle, fork=launcher, runc={"root": runc_root}
        )

    async def body() -> None:
        nonlocal manager
        manager = ShimManager(exchange=Exchange(), grpc_address=address, publish_binary="")
        await manager.start()
        t = time.perf_counter()
        await launcher.start()
        b = make_bundle(bundles, spec, rootfs, "first", ["true"])
        c = await launch("first", b.path)
        started.append(("first", c.pid, b.path))
        report["first launch incl. launcher start+warm-up ms"] = (time.perf_counter() - t) * 1e3
        await c.shutdown()
        await c.close()

        # full cycles of `true` (what `ctr run --rm busybox true` needs from the shim)
        cycles, launches = [], []
        for i in range(10):
            b = make_bundle(bundles, spec, rootfs, f"t{i}", ["true"])
            t0 = time.perf_counter()
            c = await launch(f"t{i}", b.path)
            t1 = time.perf_counter()
            started.append((f"t{i}", c.pid, b.path))
            await c.create(rootfs=b.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
            w = asyncio.create_task(c.wait())
            await c.start()
            assert (await w).exit_status == 0
            await c.delete()
            await c.shutdown()
            t2 = time.perf_counter()
            await c.close()
            launches.append((t1 - t0) * 1e3)
            cycles.append((t2 - t0) * 1e3)
        launches.sort()
        cycles.sort()
        report["warm launch ms (median)"] = launches[len(launches) // 2]
        report["launch+create+start+wait+delete ms (median)"] = cycles[len(cycles) // 2]

        # memory of idle shims with running containers
        n = 5
        clients = []
        for i in range(n):
            b = make_bundle(bundles, spec, rootfs, f"m{i}", ["sleep", "1000"])
            c = await launch(f"m{i}", b.path)
            started.append((f"m{i}", c.pid, b.path))
            await c.create(rootfs=b.rootfs_mounts, stdin="", stdout="", stderr="", terminal=False)
            await c.start()
            await c.state()
            clients.append(c)
        # shims of several containers may share one process (a shim host): count each once
        pss = [pss_kib(pid) for pid in {c.pid for c in clients}]  # one per container (no group annotation)
        report[f"PSS per shim KiB (mean of {n}, launcher alive)"] = sum(pss) / n
        uss = [uss_kib(pid) for pid in {c.pid for c in clients}]
        report[f"USS per shim KiB (mean of {n})"] = sum(uss) / n
        report["launcher PSS KiB"] = pss_kib(launcher.pid)
        for c in clients:
            await c.kill("", 9)
            await c.wait()
            await c.delete()
            await c.shutdown()
            await c.close()
        for c in clients:
            def gone(pid: int = c.pid) -> bool:
                return not pid_alive(pid)

            await poll_until(gone, what="shim exit")
        # regression guard. The task.v2 shim (protobuf runtime in every shim, one per container)
        # measured 5.9-6.2 MiB; the launcher's memory preparation (``shim.warmup.prepare_memory``:
        # hot code packed, pools and heap filled) brought it to 5.5-5.6 MiB here (5 shims, so the
        # launcher's pages are split 6 ways); the launcher's child answering the request, libc's
        # fork and the per-shim code packed to 5.2-5.3 MiB (5.06-5.11 MiB measured later); the
        # hot code profiled on a second round and glibc's tcache taken before the copies are
        # made (they had landed in its chunks, all over the heap) to 4.90-4.91 MiB on a busy
        # machine, 5.38-5.43 MiB on a quiet one.  PSS splits libpython's and the other shared
        # pages among every process mapping them, so it moves with whatever else runs Python:
        # the guard on it is loose, and the one on USS (the pages only the shim holds: what
        # each more container costs) is tight: 2.65 MiB measured (2.78 before the tcache and
        # second-round changes).  containerd's Go shim: 2.7 MiB PSS with 50 running (bench W5;
        # issue 10)
        memory = {k: v for k, v in report.items() if "SS" in k}
        assert report[f"PSS per shim KiB (mean of {n}, launcher alive)"] < 5888, memory
        assert report[f"USS per shim KiB (mean of {n})"] < 2816, memory

    async def main() -> None:
        try:
            await asyncio.wait_for(body(), 120)
        finally:
            if manager is not None:
                await manager.close()
            await launcher.close()

    try:
        asyncio.run(main())
    finally:
        for cid, pid, path in started:
            cleanup_container(runtime_root, cid, pid, path)

    # what each shim would pay without the launcher: a fresh interpreter importing the shim
    fresh = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-s", "-c", "import pycontainerd.shim.main"],
            check=True,
            env=dict(os.environ),
        )
        fresh.append((time.perf_counter() - t) * 1e3)
    report["fresh interpreter + shim imports ms (min)"] = min(fresh)

    # runc alone, for scale
    b = make_bundle(bundles, spec, rootfs, "runconly", ["true"])
    runonly_spec = json.loads((b.path / "config.json").read_text())
    runonly_spec["root"] = {"path": str(rootfs), "readonly": True}
    (b.path / "config.json").write_text(json.dumps(runonly_spec))
    rr = []
    for i in range(5):
        t = time.perf_counter()
        subprocess.run(
            ["runc", "--root", runtime_root, "run", "--bundle", str(b.path), f"rr{i}"],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        rr.append((time.perf_counter() - t) * 1e3)
    report["runc run true ms (min)"] = min(rr)
    for k, v in report.items():
        print(f"{k}: {v:.1f}")
