"""Workloads W1–W9 (issues 6, 12 and 15). Each records samples per daemon into `Metric`s, every sample with
its run index (A/B pairs are matched by it), its value or its error, and the deferred time the
daemon needed to become quiescent after it (`quiesce`).  Before every sample both daemons are
quiescent.  A failed sample is recorded as such and the workload goes on; a daemon that fails
`MAX_FAILURES` samples in a row (or its setup) is marked "not yet" with the error and skipped
for the rest of that workload."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tests.fixtures import images
from tests.fixtures.procs import pss_kib, uss_kib

from . import quiesce
from .targets import CTR, NAMESPACE, CtrError, Target

RUNC = "/usr/sbin/runc"
SAMPLE_ERRORS = (CtrError, RuntimeError, OSError, subprocess.SubprocessError, TimeoutError, ValueError)
FLOOR = "floor (runc run)"


MAX_FAILURES = 3
"""A daemon that fails this many samples of a workload in a row is given up for that workload."""


@dataclasses.dataclass
class Sample:
    run: int  # A/B pairs are the two daemons' samples with the same run index
    value: float | None = None  # None: the sample failed (see error)
    error: str = ""
    deferred_s: float | None = None  # time until the daemon was quiescent again after the sample
    settled: bool = True  # False: not quiescent within quiesce.DEADLINE
    first_look_s: float | None = None  # deferred_s 0 means: done before this (the first look's end)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Metric:
    workload: str
    name: str
    title: str
    unit: str
    samples: dict[str, list[Sample]] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    floor_of: str = ""  # for the floor metric: the metric key it is the floor of
    command: str = ""  # what is timed, as run (with {ID}/{REF} placeholders)

    def values(self, who: str) -> list[float]:
        return [s.value for s in self.samples.get(who, []) if s.value is not None]

    @property
    def key(self) -> str:
        return f"{self.workload}.{self.name}"


@dataclasses.dataclass
class Images:
    busybox_ref: str
    big_ref: str
    big: images.BuiltImage
    busybox: images.BuiltImage
    pause_ref: str = ""  # W8's and W10's sandbox image: busybox running `sleep inf`


DEFAULT_RUNS = {"W1": 5, "W2": 5, "W3": 30, "W4": 30, "W5": 3, "W6": 3, "W7": 30, "W8": 20, "W9": 30, "W10": 20}
TITLES = {
    "W1": "fetch of the big image, content only, cold",
    "W2": "pull + unpack of the big image, cold",
    "W3": "ctr run --rm IMAGE id true",
    "W4": "ctr tasks exec into a running container",
    "W5": "50 containers, started 10 at a time",
    "W6": "idle daemon memory (PSS)",
    "W7": "floor: runc run on a prepared bundle",
    "W8": "crictl exec into a running CRI container (the streaming server)",
    "W9": "pyctr against ctr on pycontainerd: run --rm … true, version",
    "W10": "CRI: RunPodSandbox, CreateContainer + StartContainer, StopPodSandbox + RemovePodSandbox",
}
PYCRICTL = "pycrictl"  # beside the interpreter running the bench
CLI_LABELS = ("pycontainerd", "containerd")  # W9 puts pyctr in the first column, ctr in the second


class Bench:
    def __init__(self, targets: Sequence[Target], imgs: Images, workdir: Path, runs: str | int | None,
                 log: Callable[[str], None] = print) -> None:
        self.targets = list(targets)
        self.imgs = imgs
        self.workdir = workdir
        self.runs_override = runs
        self.metrics: dict[str, Metric] = {}
        self.log = log
        self._fails: dict[tuple[str, str], int] = {}  # (workload, label) → failures in a row

    # -- bookkeeping ----------------------------------------------------------------------------

    def metric(self, workload: str, name: str, title: str, unit: str, command: str = "") -> Metric:
        m = Metric(workload, name, title, unit, command=command)
        return self.metrics.setdefault(m.key, m)

    def runs(self, workload: str) -> int:
        """DEFAULT_RUNS, or --runs (N for every workload, or e.g. "W3=20,W4=20,3"); W5/W6 at least 3."""
        n = DEFAULT_RUNS[workload]
        for part in str(self.runs_override or "").split(","):
            if "=" in part:
                w, v = part.split("=", 1)
                if w.strip().upper() == workload:
                    n = int(v)
                    break
            elif part.strip():
                n = int(part)
        return max(n, 3) if workload in ("W5", "W6") else n

    def live(self, *metrics: Metric) -> list[Target]:
        """Targets not yet given up in these metrics (and whose daemon started)."""
        out = []
        for t in self.targets:
            if t.start_error:
                for m in metrics:
                    m.errors.setdefault(t.label, f"daemon did not start: {t.start_error}")
                continue
            if not any(t.label in m.errors for m in metrics):
                out.append(t)
        return out

    def alternate(self, n: int, *metrics: Metric) -> Iterator[tuple[int, list[Target]]]:
        """A/B, then B/A, ...: drift on a noisy machine hits both daemons equally."""
        for i in range(n):
            live = self.live(*metrics)
            if not live:
                return
            yield i, live if i % 2 == 0 else list(reversed(live))

    def attempt(self, metrics: Sequence[Metric], t: Target, fn: Callable[[], Any]) -> Any:
        """Run fn (a setup step); on failure record "not yet: <error>" for t in every metric."""
        try:
            return fn()
        except SAMPLE_ERRORS as exc:
            msg = f"{type(exc).__name__}: {exc}"
            for m in metrics:
                m.errors.setdefault(t.label, msg)
            self.log(f"    {t.label}: not yet — {msg[:300]}")
            return None

    def settle(self, since: float | None = None, only: Target | None = None) -> dict[str, quiesce.Settled]:
        """Wait until every live daemon (or `only`) is quiescent (see quiesce)."""
        return quiesce.settle([only] if only else self.live(), since)

    def sample(self, metrics: Sequence[Metric], t: Target, run: int,
               fn: Callable[[], dict[str, float | tuple[float, dict[str, Any]]]],
               sub: Sequence[int] | None = None) -> None:
        """One sample of t: both daemons quiescent first, then fn() → {metric key: value (or
        (value, extra))}, then t's deferred time.  A failure is recorded as a failed sample of
        run `run` in every metric; MAX_FAILURES in a row give t up for the workload."""
        self.settle()
        key = (metrics[0].workload, t.label)
        try:
            got = fn()
        except SAMPLE_ERRORS as exc:
            msg = f"{type(exc).__name__}: {exc}"[:800]
            for m in metrics:
                m.samples.setdefault(t.label, []).append(Sample(run, error=msg))
            self._fails[key] = self._fails.get(key, 0) + 1
            self.log(f"    {t.label} run {run}: failed — {msg[:300]}")
            if self._fails[key] >= MAX_FAILURES:
                for m in metrics:
                    m.errors.setdefault(t.label, f"{MAX_FAILURES} failures in a row; last: {msg}")
            with contextlib.suppress(*SAMPLE_ERRORS):
                self.settle(only=t)
            return
        end = time.perf_counter()
        self._fails[key] = 0
        settled = self.settle(end, only=t)[t.label]
        for m in metrics:
            v = got.get(m.key)
            if v is None:
                continue
            value, extra = v if isinstance(v, tuple) else (v, {})
            m.samples.setdefault(t.label, []).append(
                Sample(run, value, deferred_s=settled.deferred_s, settled=settled.quiescent,
                       first_look_s=settled.first_look_s, extra=extra))

    def timed_sample(self, m: Metric, t: Target, run: int, *args: str) -> None:
        self.sample([m], t, run, lambda: {m.key: t.timed(*args)})

    # -- preparation ----------------------------------------------------------------------------

    def ensure_busybox(self, t: Target) -> None:
        have = t.ctr("images", "ls", "-q").stdout.split()
        if self.imgs.busybox_ref not in have:
            t.ctr("images", "pull", "--plain-http", self.imgs.busybox_ref)

    def cold_big(self, t: Target) -> None:
        """Remove the big image, its content and its snapshots from t; verify it is gone."""
        t.ctr("images", "rm", "--sync", self.imgs.big_ref, check=False)
        t.ctr("content", "prune", "references", check=False)
        digests = [d.digest for d in self.imgs.big.blobs()]
        present = set(t.ctr("content", "ls", "-q").stdout.split())
        left = [d for d in digests if d in present]
        if left:
            t.ctr("content", "rm", *left, check=False)
            present = set(t.ctr("content", "ls", "-q").stdout.split())
            left = [d for d in digests if d in present]
            if left:
                raise RuntimeError(f"could not remove content {left[:3]} (cold start impossible)")
        if t.base is not None:  # belt and braces: no blob file left on disk either (containerd's layout)
            blobs = t.base / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256"
            on_disk = [d for d in digests if (blobs / d.split(":", 1)[1]).exists()]
            if on_disk:
                raise RuntimeError(f"content {on_disk[:3]} still on disk under {blobs} (not cold)")

    # -- workloads ------------------------------------------------------------------------------

    def w1(self) -> None:
        m = self.metric("W1", "fetch", "W1 fetch (content only, cold)", "s",
                        "ctr content fetch --plain-http {BIG}")
        for t in self.live(m):
            self.attempt([m], t, partial(self.cold_big, t))
        for i, order in self.alternate(self.runs("W1"), m):
            for t in order:
                self.attempt([m], t, partial(self.cold_big, t))
                if t.label not in m.errors:
                    self.timed_sample(m, t, i, "content", "fetch", "--plain-http", self.imgs.big_ref)
            self.log(f"  W1 run {i + 1}: " + _last(m))
        for t in self.live():
            self.attempt([m], t, partial(self.cold_big, t))

    def w2(self) -> None:
        m = self.metric("W2", "pull", "W2 pull + unpack (cold)", "s", "ctr images pull --plain-http {BIG}")
        for i, order in self.alternate(self.runs("W2"), m):
            for t in order:
                self.attempt([m], t, partial(self.cold_big, t))
                if t.label not in m.errors:
                    self.timed_sample(m, t, i, "images", "pull", "--plain-http", self.imgs.big_ref)
                    self.attempt([m], t, partial(self.cold_big, t))
            self.log(f"  W2 run {i + 1}: " + _last(m))

    def w3(self) -> None:
        m = self.metric("W3", "run", "W3 ctr run --rm … true", "s", "ctr run --rm {BUSYBOX} {ID} true")
        for t in self.live(m):
            self.attempt([m], t, partial(self.ensure_busybox, t))
        for i, order in self.alternate(self.runs("W3"), m):
            for t in order:
                self.timed_sample(m, t, i, "run", "--rm", self.imgs.busybox_ref, f"{t.prefix}-w3-{i}", "true")
        self.log("  W3: " + _summary(m))

    def w4(self) -> None:
        m = self.metric("W4", "exec", "W4 ctr tasks exec … true", "s",
                        "ctr tasks exec --exec-id e{RUN} {ID} true  (ID: a running `sleep`)")
        started: list[Target] = []
        for t in self.live(m):
            def setup(t: Target = t) -> None:
                self.ensure_busybox(t)
                t.ctr("run", "-d", self.imgs.busybox_ref, f"{t.prefix}-w4", "sleep", "1000000")
                _wait_running(t, [f"{t.prefix}-w4"])
                started.append(t)
            self.attempt([m], t, setup)
        for i, order in self.alternate(self.runs("W4"), m):
            for t in order:
                self.timed_sample(m, t, i, "tasks", "exec", "--exec-id", f"e{i}", f"{t.prefix}-w4", "true")
        for t in started:
            self.attempt([m], t, partial(t.reset, keep_images=[self.imgs.busybox_ref]))
        self.log("  W4: " + _summary(m))

    def w5(self, n: int = 50, batch: int = 10, listing_runs: int = 10) -> None:
        start = self.metric("W5", "start50", f"W5 start {n} containers, {batch} at a time (wall)", "s",
                            f"{n} × ctr run -d {{BUSYBOX}} {{ID}} sleep 1000000, {batch} at once")
        pss = self.metric("W5", "pss_per_container", "W5 PSS of daemon + shims per running container", "MiB",
                          f"sum of /proc/PID/smaps_rollup Pss over daemon + shims with {n} running, ÷ {n}")
        tls = self.metric("W5", "tasks_ls", f"W5 ctr tasks ls with {n} present", "s", "ctr tasks ls")
        cls = self.metric("W5", "containers_ls", f"W5 ctr containers ls with {n} present", "s", "ctr containers ls")
        grouped = self.metric("W5", "pss_per_container_grouped",
                              f"W5 PSS per running container, the {n} grouped in one shim", "MiB",
                              f"as above, the {n} started with --annotation {GROUP_ANNOTATION}=<one group>")
        ms = [start, pss, tls, cls, grouped]
        for t in self.live(*ms):
            self.attempt(ms, t, partial(self.ensure_busybox, t))
        for i, order in self.alternate(self.runs("W5"), *ms):
            for t in order:
                ids = [f"{t.prefix}-w5-{i}-{k}" for k in range(n)]

                def launch(t: Target = t, ids: list[str] = ids) -> dict[str, Any]:
                    t0 = time.perf_counter()
                    for b in range(0, n, batch):
                        procs = [t.popen("run", "-d", self.imgs.busybox_ref, cid, "sleep", "1000000")
                                 for cid in ids[b:b + batch]]
                        for cid, p in zip(ids[b:b + batch], procs, strict=True):
                            _, err = p.communicate(timeout=300)
                            if p.returncode != 0:
                                raise CtrError(f"ctr run -d {cid} → exit {p.returncode}: {err.strip()[-400:]}")
                    wall = time.perf_counter() - t0
                    _wait_running(t, ids)
                    return {start.key: wall}

                self.sample([start, pss], t, i, launch)
                if not [s for s in start.samples.get(t.label, []) if s.run == i and s.value is not None]:
                    self.attempt([], t, partial(t.reset, keep_images=[self.imgs.busybox_ref]))
                    continue

                def memory(t: Target = t) -> dict[str, Any]:
                    mib, shims = t.pss_mib()
                    return {pss.key: (mib / n, {"shims": shims, "containers": n})}

                self.sample([pss], t, i, memory)
                for k in range(listing_runs):
                    self.timed_sample(tls, t, i * listing_runs + k, "tasks", "ls")
                    self.timed_sample(cls, t, i * listing_runs + k, "containers", "ls")
                self.attempt([], t, partial(t.reset, keep_images=[self.imgs.busybox_ref]))
                # the same containers grouped in one shim, as the runc shims of both daemons do for
                # the group annotation (the CRI groups a pod's containers the same way)
                gids = [f"{t.prefix}-w5g-{i}-{k}" for k in range(n)]

                group = f"--annotation={GROUP_ANNOTATION}={t.prefix}-w5g-{i}"

                def launch_grouped(t: Target = t, ids: list[str] = gids, group: str = group) -> dict[str, Any]:
                    for b in range(0, n, batch):
                        procs = [t.popen("run", "-d", group, self.imgs.busybox_ref, cid, "sleep", "1000000")
                                 for cid in ids[b:b + batch]]
                        for cid, p in zip(ids[b:b + batch], procs, strict=True):
                            _, err = p.communicate(timeout=300)
                            if p.returncode != 0:
                                raise CtrError(f"ctr run -d {cid} → exit {p.returncode}: {err.strip()[-400:]}")
                    _wait_running(t, ids)
                    return {}

                def memory_grouped(t: Target = t) -> dict[str, Any]:
                    mib, shims = t.pss_mib()
                    return {grouped.key: (mib / n, {"shims": shims, "containers": n})}

                self.sample([grouped], t, i, launch_grouped)
                self.sample([grouped], t, i, memory_grouped)
                self.attempt([], t, partial(t.reset, keep_images=[self.imgs.busybox_ref]))
            self.log(f"  W5 run {i + 1}: start " + _last(start) + " · PSS/ctr " + _last(pss)
                     + " · grouped " + _last(grouped))

    def w6_sample(self, name: str, title: str, run: int = 0) -> None:
        m = self.metric("W6", name, title, "MiB", "sum of Pss (smaps_rollup) over daemon + shims/helpers")
        # PSS splits shared pages among their sharers, so it moves with whatever else runs the same
        # binary (another containerd, another python); USS (private pages only) does not
        u = self.metric("W6", f"{name}_uss", title.replace("PSS", "USS (private memory)"), "MiB",
                        "sum of Private_Clean + Private_Dirty (smaps_rollup) over daemon + shims/helpers")
        for t in self.live(m):
            def one(t: Target = t) -> dict[str, Any]:
                t.ctr("version")
                if t.daemon_pid is None:
                    raise RuntimeError("daemon pid unknown (socket owner not found)")
                mib, shims = t.pss_mib()
                own = pss_kib(t.daemon_pid) / 1024
                uss = sum(uss_kib(p) for p in [t.daemon_pid, *t.shim_pids()]) / 1024
                return {m.key: (mib, {"daemon_mib": round(own, 2), "helpers": shims,
                                      "task_shims_alive": len(t.task_shim_pids())}),
                        u.key: (uss, {"daemon_mib": round(uss_kib(t.daemon_pid) / 1024, 2), "helpers": shims})}
            self.sample([m, u], t, run, one)

    def w7(self) -> None:
        m = self.metric("W7", "runc_run", "W7 floor: runc run … true", "s",
                        "runc --root R run --bundle B {ID}  (busybox rootfs, `runc spec` running true)")
        m.floor_of = "W3.run"
        bundle = self.workdir / "w7-bundle"
        root = self.workdir / "w7-runc-root"
        prepare_bundle(self.imgs.busybox, bundle)
        for i in range(self.runs("W7")):
            t0 = time.perf_counter()
            r = subprocess.run([RUNC, "--root", str(root), "run", "--bundle", str(bundle), f"pycd-bench-w7-{i}"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                m.errors[FLOOR] = f"runc run → exit {r.returncode}: {r.stderr.strip()[-400:]}"
                break
            m.samples.setdefault(FLOOR, []).append(Sample(i, dt))
        self.log("  W7: " + _summary(m))

    def w9(self) -> None:
        """pyctr against ctr, both on pycontainerd (issue 15: pyctr run --rm ≤ 1.3× ctr run --rm).

        The two CLIs take the two columns of the table (pyctr where pycontainerd's samples go,
        ctr where containerd's do), so the ratio column is pyctr/ctr; the order alternates
        per run like the daemons' in the other workloads."""
        mr = self.metric("W9", "run", "W9 run --rm … true: pyctr (1st column) / ctr (2nd), on pycontainerd",
                         "s", "pyctr|ctr -a OURS run --rm {BUSYBOX} {ID} true")
        mv = self.metric("W9", "version", "W9 version: pyctr (1st column) / ctr (2nd), on pycontainerd",
                         "s", "pyctr|ctr -a OURS version")
        ours = next((t for t in self.live(mr, mv) if t.key == "ours"), None)
        if ours is None:
            for m in (mr, mv):
                m.errors.setdefault(CLI_LABELS[0], "pycontainerd is not among the targets")
            return
        self.attempt([mr, mv], ours, partial(self.ensure_busybox, ours))
        clis = ((str(Path(sys.executable).parent / "pyctr"), CLI_LABELS[0]), (CTR, CLI_LABELS[1]))
        for i in range(self.runs("W9")):
            for binary, label in clis if i % 2 == 0 else tuple(reversed(clis)):
                name = Path(binary).name
                for m, args in ((mr, ("run", "--rm", self.imgs.busybox_ref, f"{ours.prefix}-w9-{name}-{i}", "true")),
                                (mv, ("version",))):
                    self.settle()
                    t0 = time.perf_counter()
                    r = subprocess.run([binary, "-a", ours.address, "-n", NAMESPACE, *args], capture_output=True,
                                       text=True, stdin=subprocess.DEVNULL, timeout=120)
                    dt = time.perf_counter() - t0
                    sample = Sample(i, dt) if r.returncode == 0 else Sample(
                        i, error=f"{name} {' '.join(args)} → exit {r.returncode}: {r.stderr.strip()[-400:]}")
                    m.samples.setdefault(label, []).append(sample)
        self.log("  W9 run: " + _summary(mr))
        self.log("  W9 version: " + _summary(mv))


def cri_exec_workload(bench: Bench, busybox_ref: str, workdir: Path) -> None:
    """W8 on `bench`'s targets, daemons started with the CRI plugin: a host-network pod holding
    a busybox `sleep`, then `pycrictl exec CONTAINER true` timed (Exec RPC, the streaming URL,
    SPDY/3.1 remotecommand v4: what `crictl exec` does, in the same client for both daemons)."""
    m = bench.metric("W8", "cri_exec", "W8 crictl exec … true (streaming server)", "s",
                     "pycrictl -r unix://{SOCK} exec {ID} true  (ID: a running `sleep` in a host-network pod)")
    exe = str(Path(sys.executable).parent / PYCRICTL)
    boxes: dict[str, str] = {}

    def crictl(t: Target, *args: str) -> str:
        r = subprocess.run([exe, "-r", f"unix://{t.address}", *args], capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise CtrError(f"pycrictl {' '.join(args)} → exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
        return r.stdout.strip()

    for t in bench.live(m):
        def setup(t: Target = t) -> None:
            d = workdir / f"w8-{t.key}"
            d.mkdir(exist_ok=True)
            pod_cfg = d / "pod.json"
            pod_cfg.write_text(json.dumps({
                "metadata": {"name": f"w8-{t.key}", "namespace": "bench", "uid": f"w8-{t.key}", "attempt": 0},
                "log_directory": str(d / "logs"),
                "linux": {"security_context": {"namespace_options": {"network": 2}}}}))
            ctr_cfg = d / "ctr.json"
            ctr_cfg.write_text(json.dumps({"metadata": {"name": "sleeper"}, "image": {"image": busybox_ref},
                                           "command": ["sleep", "1000000"], "log_path": "sleeper.log",
                                           "linux": {}}))
            pod = crictl(t, "runp", str(pod_cfg))
            crictl(t, "pull", busybox_ref)
            cid = crictl(t, "create", pod, str(ctr_cfg), str(pod_cfg))
            crictl(t, "start", cid)
            crictl(t, "exec", cid, "true")  # warm: the first exec pays for imports and caches
            boxes[t.label] = cid
        bench.attempt([m], t, setup)
    for i, order in bench.alternate(bench.runs("W8"), m):
        for t in order:
            def one(t: Target = t) -> dict[str, Any]:
                t0 = time.perf_counter()
                crictl(t, "exec", boxes[t.label], "true")
                return {m.key: time.perf_counter() - t0}
            bench.sample([m], t, i, one)
    bench.log("  W8: " + _summary(m))


def prepare_bundle(img: images.BuiltImage, bundle: Path) -> None:
    """An OCI bundle: the busybox layer extracted to rootfs/, `runc spec` edited to run `true`."""
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in img.layers:
        with tarfile.open(img.layout.blob_path(layer.digest), "r:*") as tf:
            tf.extractall(rootfs, filter="fully_trusted")
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    cfg_path = bundle / "config.json"
    cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["root"] = {"path": "rootfs", "readonly": True}
    cfg_path.write_text(json.dumps(cfg, indent=1))


GROUP_ANNOTATION = "io.containerd.runc.v2.group"


def _wait_running(t: Target, ids: Sequence[str], timeout: float = 60) -> None:
    want = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        running = {tid for tid, st in t.task_ids() if st == "RUNNING"}
        if want <= running:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(want - running)} of {len(want)} tasks not RUNNING after {timeout}s")
        time.sleep(0.05)


def _last(m: Metric) -> str:
    parts = []
    for who, xs in m.samples.items():
        if xs:
            last = xs[-1]
            shown = f"{last.value:.3f}{m.unit}" if last.value is not None else "failed"
            if last.deferred_s is not None:
                shown += f" (+{last.deferred_s:.3f}s deferred)"
            parts.append(f"{who} {shown}")
    return ", ".join(parts) or "-"


def _summary(m: Metric) -> str:
    import statistics

    parts = []
    for who in m.samples:
        if xs := m.values(who):
            parts.append(f"{who} median {statistics.median(xs):.3f}{m.unit} (n={len(xs)})")
    return ", ".join(parts) or "-"
