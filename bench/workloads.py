"""Workloads W1–W7 (issue 6). Each records samples per daemon into `Metric`s; a daemon whose
command fails is marked "not yet" with the error and skipped for the rest of that workload."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tests.fixtures import images
from tests.fixtures.procs import pss_kib

from .targets import CtrError, Target

RUNC = "/usr/sbin/runc"
FLOOR = "floor (runc run)"


@dataclasses.dataclass
class Metric:
    workload: str
    name: str
    title: str
    unit: str
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    floor_of: str = ""  # for the floor metric: the metric key it is the floor of

    @property
    def key(self) -> str:
        return f"{self.workload}.{self.name}"


@dataclasses.dataclass
class Images:
    busybox_ref: str
    big_ref: str
    big: images.BuiltImage
    busybox: images.BuiltImage


DEFAULT_RUNS = {"W1": 5, "W2": 5, "W3": 30, "W4": 30, "W5": 3, "W6": 1, "W7": 30}
TITLES = {
    "W1": "fetch of the big image, content only, cold",
    "W2": "pull + unpack of the big image, cold",
    "W3": "ctr run --rm IMAGE id true",
    "W4": "ctr tasks exec into a running container",
    "W5": "50 containers, started 10 at a time",
    "W6": "idle daemon memory (PSS)",
    "W7": "floor: runc run on a prepared bundle",
}


class Bench:
    def __init__(self, targets: Sequence[Target], imgs: Images, workdir: Path, runs: int | None,
                 log: Callable[[str], None] = print) -> None:
        self.targets = list(targets)
        self.imgs = imgs
        self.workdir = workdir
        self.runs_override = runs
        self.metrics: dict[str, Metric] = {}
        self.log = log

    # -- bookkeeping ----------------------------------------------------------------------------

    def metric(self, workload: str, name: str, title: str, unit: str) -> Metric:
        m = Metric(workload, name, title, unit)
        return self.metrics.setdefault(m.key, m)

    def runs(self, workload: str) -> int:
        return self.runs_override if self.runs_override and workload != "W6" else DEFAULT_RUNS[workload]

    def live(self, *metrics: Metric) -> list[Target]:
        """Targets not yet failed in these metrics (and whose daemon started)."""
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
        """Run fn; on failure record "not yet: <error>" for t in every metric and return None."""
        try:
            return fn()
        except (CtrError, RuntimeError, OSError, subprocess.SubprocessError, TimeoutError, ValueError) as exc:
            msg = f"{type(exc).__name__}: {exc}"
            for m in metrics:
                m.errors.setdefault(t.label, msg)
            self.log(f"    {t.label}: not yet — {msg[:300]}")
            return None

    def record(self, m: Metric, who: str, value: float) -> None:
        m.samples.setdefault(who, []).append(value)

    def timed_sample(self, m: Metric, t: Target, *args: str) -> None:
        self.record(m, t.label, t.timed(*args))

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
        m = self.metric("W1", "fetch", "W1 fetch (content only, cold)", "s")
        for t in self.live(m):
            self.attempt([m], t, partial(self.cold_big, t))
        for i, order in self.alternate(self.runs("W1"), m):
            for t in order:
                def one(t: Target = t) -> None:
                    self.cold_big(t)
                    self.record(m, t.label, t.timed("content", "fetch", "--plain-http", self.imgs.big_ref))
                self.attempt([m], t, one)
            self.log(f"  W1 run {i + 1}: " + _last(m))
        for t in self.live():
            self.attempt([m], t, partial(self.cold_big, t))

    def w2(self) -> None:
        m = self.metric("W2", "pull", "W2 pull + unpack (cold)", "s")
        for i, order in self.alternate(self.runs("W2"), m):
            for t in order:
                def one(t: Target = t) -> None:
                    self.cold_big(t)
                    self.record(m, t.label, t.timed("images", "pull", "--plain-http", self.imgs.big_ref))
                    self.cold_big(t)
                self.attempt([m], t, one)
            self.log(f"  W2 run {i + 1}: " + _last(m))

    def w3(self) -> None:
        m = self.metric("W3", "run", "W3 ctr run --rm … true", "s")
        for t in self.live(m):
            self.attempt([m], t, partial(self.ensure_busybox, t))
        for i, order in self.alternate(self.runs("W3"), m):
            for t in order:
                args = ("run", "--rm", self.imgs.busybox_ref, f"{t.prefix}-w3-{i}", "true")
                self.attempt([m], t, partial(self.timed_sample, m, t, *args))
        self.log("  W3: " + _summary(m))

    def w4(self) -> None:
        m = self.metric("W4", "exec", "W4 ctr tasks exec … true", "s")
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
                args = ("tasks", "exec", "--exec-id", f"e{i}", f"{t.prefix}-w4", "true")
                self.attempt([m], t, partial(self.timed_sample, m, t, *args))
        for t in started:
            self.attempt([m], t, partial(t.reset, keep_images=[self.imgs.busybox_ref]))
        self.log("  W4: " + _summary(m))

    def w5(self, n: int = 50, batch: int = 10, listing_runs: int = 10) -> None:
        start = self.metric("W5", "start50", f"W5 start {n} containers, {batch} at a time (wall)", "s")
        pss = self.metric("W5", "pss_per_container", "W5 PSS of daemon + shims per running container", "MiB")
        tls = self.metric("W5", "tasks_ls", f"W5 ctr tasks ls with {n} present", "s")
        cls = self.metric("W5", "containers_ls", f"W5 ctr containers ls with {n} present", "s")
        ms = [start, pss, tls, cls]
        for t in self.live(*ms):
            self.attempt(ms, t, partial(self.ensure_busybox, t))
        for i, order in self.alternate(self.runs("W5"), *ms):
            for t in order:
                def one(t: Target = t, i: int = i) -> None:
                    try:
                        ids = [f"{t.prefix}-w5-{i}-{k}" for k in range(n)]
                        t0 = time.perf_counter()
                        for b in range(0, n, batch):
                            procs = [t.popen("run", "-d", self.imgs.busybox_ref, cid, "sleep", "1000000")
                                     for cid in ids[b:b + batch]]
                            for cid, p in zip(ids[b:b + batch], procs, strict=True):
                                _, err = p.communicate(timeout=300)
                                if p.returncode != 0:
                                    raise CtrError(f"ctr run -d {cid} → exit {p.returncode}: {err.strip()[-400:]}")
                        self.record(start, t.label, time.perf_counter() - t0)
                        _wait_running(t, ids)
                        mib, _shims = t.pss_mib()
                        self.record(pss, t.label, mib / n)
                        for _ in range(listing_runs):
                            self.record(tls, t.label, t.timed("tasks", "ls"))
                            self.record(cls, t.label, t.timed("containers", "ls"))
                    finally:
                        t.reset(keep_images=[self.imgs.busybox_ref])
                self.attempt(ms, t, one)
            self.log(f"  W5 run {i + 1}: start " + _last(start) + " · PSS/ctr " + _last(pss))

    def w6_sample(self, name: str, title: str) -> None:
        m = self.metric("W6", name, title, "MiB")
        for t in self.live(m):
            def one(t: Target = t) -> None:
                t.ctr("version")
                # shims of removed containers exit asynchronously: wait (bounded) for them to go
                deadline = time.monotonic() + 10
                while t.task_shim_pids() and time.monotonic() < deadline:
                    time.sleep(0.05)
                mib, shims = t.pss_mib()
                if t.daemon_pid is None:
                    raise RuntimeError("daemon pid unknown (socket owner not found)")
                self.record(m, t.label, mib)
                own = pss_kib(t.daemon_pid) / 1024
                m.errors[f"{t.label} breakdown"] = (f"daemon {own:.1f} MiB + {shims} helper/shim process(es) "
                                                    f"{mib - own:.1f} MiB")
                if left := len(t.task_shim_pids()):
                    m.errors.setdefault(f"{t.label} note", f"{left} shim(s) still alive ({shims} helper processes)")
            self.attempt([m], t, one)

    def w7(self) -> None:
        m = self.metric("W7", "runc_run", "W7 floor: runc run … true", "s")
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
            self.record(m, FLOOR, dt)
        self.log("  W7: " + _summary(m))


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
            parts.append(f"{who} {xs[-1]:.3f}{m.unit}")
    return ", ".join(parts) or "-"


def _summary(m: Metric) -> str:
    import statistics

    parts = []
    for who, xs in m.samples.items():
        if xs:
            parts.append(f"{who} median {statistics.median(xs):.3f}{m.unit} (n={len(xs)})")
    return ", ".join(parts) or "-"
