"""python -m bench [--workloads W1,W3] [--runs N] [--ours-socket S] [--containerd-socket S]"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from tests.fixtures import images
from tests.fixtures.containerd import CriOptions
from tests.fixtures.procs import remove_tree
from tests.fixtures.registry import running_registry

from . import cri as bench_cri
from . import quiesce, report
from .targets import ContainerdTarget, ExternalTarget, OursTarget, Target
from .workloads import DEFAULT_RUNS, TITLES, Bench, Images, cri_exec_workload

ALL = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10"]
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                epilog="Workloads: " + "; ".join(f"{k} {v}" for k, v in TITLES.items()))
    p.add_argument("--workloads", default=",".join(ALL), help="comma-separated subset of W1..W10 (default: all)")
    p.add_argument("--runs", default=None,
                   help="runs per workload: N for all, or e.g. W3=20,W4=20,3 (W5 and W6 at least 3; default: "
                   + ", ".join(f"{k}={v}" for k, v in DEFAULT_RUNS.items()) + ")")
    p.add_argument("--ours-socket", default=None, help="use a running pycontainerd on this socket")
    p.add_argument("--containerd-socket", default=None, help="use a running containerd on this socket")
    p.add_argument("--targets", default="ours,containerd", help="which daemons to drive (default: both)")
    p.add_argument("--big-mb", type=int, default=300, help="uncompressed size of the big image (default 300)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"results dir (default {RESULTS})")
    args = p.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in ALL]
    if bad:
        p.error(f"unknown workloads {bad}; choose from {ALL}")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


@contextlib.contextmanager
def started(target: Target) -> Iterator[Target]:
    try:
        try:
            t0 = time.perf_counter()
            target.start()
            log(f"  {target.label} up on {target.address} in {time.perf_counter() - t0:.2f}s (pid {target.daemon_pid})")
        except Exception as exc:
            target.start_error = f"{type(exc).__name__}: {exc}"[:800]
            log(f"  {target.label} did not start: {target.start_error[:300]}")
        yield target
    finally:
        target.close()


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def _mem_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return 0.0


def w6_idle_start(bench: Bench, args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """W6 idle PSS right after start, `runs("W6")` times: run 0 on the daemons under test, the
    others on fresh pairs of daemons started (in alternating order) only for this and closed."""
    title = "W6 idle PSS right after start"
    bench.w6_sample("idle_start", title, run=0)
    if args.ours_socket or args.containerd_socket:
        log("  W6: running daemons were given: one idle-start sample only")
        return
    for i in range(1, bench.runs("W6")):
        fresh: list[Target] = []
        if "ours" in args.targets:
            fresh.append(OursTarget())
        if "containerd" in args.targets:
            fresh.append(ContainerdTarget())
        if i % 2:
            fresh.reverse()
        with contextlib.ExitStack() as stack:
            live = [stack.enter_context(started(t)) for t in fresh]
            side = Bench(live, bench.imgs, bench.workdir, args.runs, log)
            side.metrics = bench.metrics
            side.w6_sample("idle_start", title, run=i)
        log(f"  W6 idle start run {i + 1}: " + ", ".join(
            f"{who} {xs[-1].value:.1f} MiB" for who, xs in bench.metrics["W6.idle_start"].samples.items()
            if xs and xs[-1].value is not None))


def w8_cri_exec(bench: Bench, args: argparse.Namespace, pause_ref: str, log: Callable[[str], None]) -> None:
    """W8 on a pair of daemons started with the CRI plugin for it (the others run without)."""
    if args.ours_socket or args.containerd_socket:
        log("  W8: needs daemons started here with the CRI plugin: skipped with --*-socket")
        return
    cri = CriOptions(sandbox_image=pause_ref, insecure_registries=[pause_ref.split("/", 1)[0]])
    fresh: list[Target] = []
    if "ours" in args.targets:
        fresh.append(OursTarget(cri=cri))
    if "containerd" in args.targets:
        fresh.append(ContainerdTarget(cri=cri))
    with contextlib.ExitStack() as stack:
        live = [stack.enter_context(started(t)) for t in fresh]
        side = Bench(live, bench.imgs, bench.workdir, args.runs, log)
        side.metrics = bench.metrics
        cri_exec_workload(side, bench.imgs.busybox_ref, bench.workdir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench needs root (runc, overlayfs, cgroups)", file=sys.stderr)
        return 2
    for tool in ("/usr/bin/ctr", "/usr/sbin/runc", "/usr/bin/containerd", "/usr/bin/docker-registry"):
        if not Path(tool).exists():
            print(f"missing {tool}: make deps", file=sys.stderr)
            return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    git = _version(["git", "-C", str(Path(__file__).resolve().parents[1]), "describe", "--always", "--dirty"])
    workdir = Path(tempfile.mkdtemp(prefix="pycd-bench-", dir="/tmp"))
    meta: dict[str, object] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "stamp": stamp,
        "git": git,
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{platform.machine()} {os.cpu_count()} cpus ({_cpu_model()}), "
                   f"{_mem_gib():.0f} GiB, kernel {platform.release()}",
        "loadavg_start": _loadavg(),
        "ctr": _version(["/usr/bin/ctr", "--version"]),
        "containerd": _version(["/usr/bin/containerd", "--version"]),
        "runc": _version(["/usr/sbin/runc", "--version"]),
        "cgroups": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1",
        "snapshotter": "overlayfs",
        "shim_grouping": {"pycontainerd": "one shim per container (ctr run: no io.containerd.runc.v2.group); "
                                          "W5 grouped: one shim for the 50 (the group annotation)",
                          "containerd": "one containerd-shim-runc-v2 per container (ctr run: no sandbox grouping); "
                                        "W5 grouped: one containerd-shim-runc-v2 for the 50 (the group annotation)",
                          "W8, W10 (CRI)": "both: one shim per pod (its containers grouped by sandbox id)"},
        "quiescence": {"poll_s": quiesce.POLL, "window_s": quiesce.WINDOW, "deadline_s": quiesce.DEADLINE,
                       "idle_ticks": quiesce.IDLE_TICKS},
    }
    try:
        with contextlib.ExitStack() as stack:
            log("building images …")
            t0 = time.perf_counter()
            busybox = images.build_busybox_image(workdir / "busybox")
            big = images.build_big_image(target_bytes=args.big_mb << 20)
            meta["big_image"] = (f"{len(big.layers)} layers, {big.total_size() / 2**20:.0f} MiB compressed "
                                 f"(~{args.big_mb} MiB uncompressed), cached at {big.path}")
            log(f"  images ready in {time.perf_counter() - t0:.1f}s; big image: {meta['big_image']}")
            reg = stack.enter_context(running_registry())
            images.push_to_registry(busybox, reg.url, "bench/busybox", "latest")
            images.push_to_registry(big, reg.url, "bench/big", "latest")
            imgs = Images(reg.ref("bench/busybox"), reg.ref("bench/big"), big, busybox)
            if {"W8", "W10"} & set(args.workloads):  # the CRI sandbox image: busybox sleeping
                pause = images.build_busybox_image(workdir / "pause", name="docker.io/library/pause:bench",
                                                   cmd=["sleep", "inf"])
                images.push_to_registry(pause, reg.url, "bench/pause", "latest")
                imgs.pause_ref = reg.ref("bench/pause")
            log(f"  registry {reg.url} serving {imgs.busybox_ref} and {imgs.big_ref}")

            targets: list[Target] = []
            if "ours" in args.targets:
                ours: Target = (ExternalTarget("ours", "pycontainerd", args.ours_socket, "a") if args.ours_socket
                                else OursTarget())
                targets.append(stack.enter_context(started(ours)))
            if "containerd" in args.targets:
                theirs: Target = (ExternalTarget("containerd", "containerd", args.containerd_socket, "b")
                                  if args.containerd_socket else ContainerdTarget())
                targets.append(stack.enter_context(started(theirs)))

            bench = Bench(targets, imgs, workdir, args.runs, log)
            wl = set(args.workloads)
            if "W6" in wl:
                w6_idle_start(bench, args, log)
            for name, fn in (("W1", bench.w1), ("W2", bench.w2), ("W3", bench.w3), ("W7", bench.w7),
                             ("W4", bench.w4), ("W5", bench.w5), ("W9", bench.w9)):
                if name in wl:
                    log(f"{name}: {TITLES[name]}")
                    t0 = time.perf_counter()
                    fn()
                    log(f"  ({time.perf_counter() - t0:.1f}s)")
            if "W8" in wl:
                log(f"W8: {TITLES['W8']}")
                t0 = time.perf_counter()
                w8_cri_exec(bench, args, imgs.pause_ref, log)
                log(f"  ({time.perf_counter() - t0:.1f}s)")
            if "W10" in wl:
                log(f"W10: {TITLES['W10']}")
                t0 = time.perf_counter()
                if args.ours_socket or args.containerd_socket:
                    bench_cri.w10(bench)  # the given daemons must serve CRI
                else:
                    with bench_cri.cri_targets(args.targets, imgs, started) as cri_targets:
                        side = Bench(cri_targets, imgs, workdir, args.runs, log)
                        side.metrics = bench.metrics
                        bench_cri.w10(side)
                log(f"  ({time.perf_counter() - t0:.1f}s)")
            if "W6" in wl:
                for t in bench.live():
                    bench.attempt([], t, partial(t.reset, keep_images=[]))
                bench.w6_sample("idle_after", "W6 idle PSS after the workloads, everything removed")

            meta["loadavg_end"] = _loadavg()
            meta["commands"] = {m.key: m.command for m in bench.metrics.values()}
            paths = report.write_all(bench.metrics, meta, args.output, stamp)
            log("")
            log(report.terminal(bench.metrics))
            log("")
            for p in paths:
                log(f"wrote {p}")
    finally:
        if not os.environ.get("PYCD_KEEP_TMP"):
            shutil.rmtree(workdir / "w7-runc-root", ignore_errors=True)
            remove_tree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
