"""Per-call latency of unary gRPC calls: pycontainerd vs containerd (vs a minimal Python server).

    sudo .venv/bin/python -m bench.rpc_latency                   # ours vs containerd, 300 calls each
    sudo .venv/bin/python -m bench.rpc_latency -n 1000 --floors aio-uvloop,sync
    sudo .venv/bin/python -m bench.rpc_latency --ours-socket /run/pycontainerd/pycontainerd.sock

Both daemons are started side by side on their own temp roots (``bench.targets``); ``--floors``
adds minimal servers answering Version only (``bench.rpc_floor``: the floor of a Python gRPC
server on this machine). One client (grpcio's synchronous stub, one channel per daemon)
makes every call, so its own cost is the same for all.  Calls are interleaved: call i goes to
each daemon in turn (the order alternating with i), so that machine noise hits every daemon
alike; each daemon's median is reported, and the median of the per-call ratios (pairs
i) against containerd.  ``ctr version`` is the real client: one process per call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespaces_pb2, namespaces_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from tests.fixtures.procs import remove_tree, stop_process, wait_for

from .targets import CTR, ContainerdTarget, ExternalTarget, OursTarget, Target

NAMESPACE = "bench-rpc"
CONTAINER = "rpc-latency"
METHODS = ("version", "ns-get", "containers-get", "lease-create-delete", "container-create-delete", "connect-version",
           "ctr-version")
SERVED_BY_FLOORS = ("version", "connect-version")  # ctr version also asks Introspection.Server
MD = (("containerd-namespace", NAMESPACE),)


class Floor:
    """``bench.rpc_floor`` in a subprocess: a server answering Version only."""

    def __init__(self, spec: str) -> None:
        """``KIND[+PRESET][@EXPERIMENT:...]``: an experiment list is gRPC's ``GRPC_EXPERIMENTS``."""
        self.key = f"floor-{spec}"
        kind, _, experiments = spec.partition("@")
        env = dict(os.environ)
        if experiments:
            env["GRPC_EXPERIMENTS"] = experiments.replace(":", ",")
        self.base = Path(tempfile.mkdtemp(prefix="pycd-bench-floor-", dir="/tmp"))
        self.address = str(self.base / "floor.sock")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.rpc_floor", self.address, kind],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{self.key} did not start")

    def close(self) -> None:
        stop_process(self.proc)
        remove_tree(self.base)


class Client:
    """One channel to one daemon and the stubs the measured calls use."""

    def __init__(self, key: str, address: str, pid: int | None) -> None:
        self.key = key
        self.address = address
        self.pid = pid  # the server's, for its CPU time
        self.channel = grpc.insecure_channel(f"unix:{address}")
        self.version = version_pb2_grpc.VersionStub(self.channel)
        self.namespaces = namespaces_pb2_grpc.NamespacesStub(self.channel)
        self.containers = containers_pb2_grpc.ContainersStub(self.channel)
        self.leases = leases_pb2_grpc.LeasesStub(self.channel)

    def prepare(self) -> None:
        """The namespace and container the Get calls read (absent ones are created)."""
        with contextlib.suppress(grpc.RpcError):
            self.namespaces.Create(namespaces_pb2.CreateNamespaceRequest(
                namespace=namespaces_pb2.Namespace(name=NAMESPACE)), metadata=MD)
        spec = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
        c = containers_pb2.Container(id=CONTAINER, image="docker.io/library/busybox:latest", spec=spec,
                                     labels={"bench": "rpc"})
        c.runtime.name = "io.containerd.runc.v2"
        with contextlib.suppress(grpc.RpcError):
            self.containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=MD)

    def call(self, method: str) -> Callable[[], Any]:
        if method == "version":
            return lambda: self.version.Version(empty_pb2.Empty())
        if method == "ns-get":
            req = namespaces_pb2.GetNamespaceRequest(name=NAMESPACE)
            return lambda: self.namespaces.Get(req, metadata=MD)
        if method == "containers-get":
            creq = containers_pb2.GetContainerRequest(id=CONTAINER)
            return lambda: self.containers.Get(creq, metadata=MD)
        if method == "lease-create-delete":  # two durable writes, as ctr run's NewContainer makes
            return self._lease_create_delete
        if method == "container-create-delete":  # two durable writes, as ctr run --rm makes
            return self._container_create_delete
        if method == "connect-version":
            return lambda: _connect_version(self.address)
        if method == "ctr-version":
            argv = [CTR, "-a", self.address, "version"]
            return lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          stdin=subprocess.DEVNULL)
        raise ValueError(method)


    def _lease_create_delete(self) -> None:
        lease = self.leases.Create(leases_pb2.CreateRequest(id="rpc-latency-lease"), metadata=MD).lease
        self.leases.Delete(leases_pb2.DeleteRequest(id=lease.id), metadata=MD)

    def _container_create_delete(self) -> None:
        spec = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
        c = containers_pb2.Container(id="rpc-latency-cd", image="docker.io/library/busybox:latest", spec=spec)
        c.runtime.name = "io.containerd.runc.v2"
        self.containers.Create(containers_pb2.CreateContainerRequest(container=c), metadata=MD)
        self.containers.Delete(containers_pb2.DeleteContainerRequest(id=c.id), metadata=MD)


def _connect_version(address: str) -> None:
    """A new connection for one Version call (what every ``ctr`` command pays once)."""
    with grpc.insecure_channel(f"unix:{address}") as channel:
        version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty())


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(clients: list[Client], method: str, n: int, warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``n`` interleaved calls to each client: seconds per call, and each server's CPU seconds
    per call (its whole process over the run: idle servers spend next to nothing)."""
    calls = [(c.key, c.call(method)) for c in clients]
    for _ in range(warmup):
        for _, fn in calls:
            fn()
    out: dict[str, list[float]] = {key: [] for key, _ in calls}
    clock = time.perf_counter
    cpu0 = {c.key: cpu_seconds(c.pid) for c in clients}
    for i in range(n):
        for key, fn in (calls if i % 2 == 0 else calls[::-1]):
            t0 = clock()
            fn()
            out[key].append(clock() - t0)
    cpu = {c.key: (cpu_seconds(c.pid) - cpu0[c.key]) / n for c in clients}
    return out, cpu


def summarize(method: str, samples: dict[str, list[float]], cpu: dict[str, float], reference: str) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "n": len(next(iter(samples.values())))}
    ref = samples.get(reference)
    for key, xs in samples.items():
        entry: dict[str, Any] = {"median_us": statistics.median(xs) * 1e6, "server_cpu_us": cpu[key] * 1e6,
                                 "p10_us": statistics.quantiles(xs, n=10)[0] * 1e6,
                                 "p90_us": statistics.quantiles(xs, n=10)[-1] * 1e6}
        if ref is not None and key != reference:
            entry["ratio_of_medians"] = statistics.median(xs) / statistics.median(ref)
            entry["median_paired_ratio"] = statistics.median(a / b for a, b in zip(xs, ref, strict=True))
        row[key] = entry
    return row


def fmt(row: dict[str, Any], keys: list[str]) -> str:
    cells = [f"{row['method']:<15}"]
    for key in keys:
        if key not in row:
            cells.append(f"{'-':>25}")
            continue
        e = row[key]
        ratio = f" ×{e['median_paired_ratio']:.2f}" if "median_paired_ratio" in e else ""
        cells.append(f"{e['median_us']:>7.0f} µs{ratio:<6} cpu {e['server_cpu_us']:>5.0f}")
    return " | ".join(cells)


@contextlib.contextmanager
def started(args: argparse.Namespace) -> Iterator[list[Client]]:
    targets: list[Target] = []
    envs: dict[str, dict[str, str]] = {}  # a variant's environment, by key
    floors: list[Floor] = []
    try:
        if "ours" in args.targets:
            targets.append(ExternalTarget("ours", "pycontainerd", args.ours_socket, "a") if args.ours_socket
                           else OursTarget())
        if "containerd" in args.targets:
            targets.append(ExternalTarget("containerd", "containerd", args.containerd_socket, "b")
                           if args.containerd_socket else ContainerdTarget())
        for spec in args.ours_variants:
            name, _, env = spec.partition(":")
            variant = OursTarget()
            variant.key = f"ours-{name}"
            envs[variant.key] = dict(kv.split("=", 1) for kv in env.split(",") if kv)
            for config in args.ours_variant_configs:
                if config.partition(":")[0] == name:
                    with open(variant.config, "a") as fh:
                        fh.write(config.partition(":")[2].replace("\\n", "\n") + "\n")
            targets.append(variant)
        for t in targets:
            saved = dict(os.environ)
            os.environ.update(envs.get(t.key, {}))  # the daemon inherits it
            try:
                t.start()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        for kind in args.floors:
            floors.append(Floor(kind))
        clients = ([Client(t.key, t.address, t.daemon_pid) for t in targets]
                   + [Client(f.key, f.address, f.proc.pid) for f in floors])
        for c in clients:
            wait_for(lambda c=c: _answers(c), 30, f"{c.key} to answer Version", interval=0.05)  # type: ignore[misc]
        yield clients
    finally:
        for f in floors:
            with contextlib.suppress(Exception):
                f.close()
        for t in targets:
            with contextlib.suppress(Exception):
                t.close()


def _answers(c: Client) -> bool:
    try:
        c.version.Version(empty_pb2.Empty(), timeout=2)
    except grpc.RpcError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.rpc_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=300, help="calls per daemon and method (default 300)")
    p.add_argument("--ctr-n", type=int, default=40, help="`ctr version` runs per daemon (default 40)")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--targets", default="ours,containerd")
    p.add_argument("--floors", default="", help="minimal servers to add: aio, aio-uvloop, sync")
    p.add_argument("--ours-variant", dest="ours_variants", action="append", default=[],
                   help="NAME:ENV=VALUE[,ENV=VALUE]: another pycontainerd started with this environment")
    p.add_argument("--ours-variant-config", dest="ours_variant_configs", action="append", default=[],
                   help="NAME:TOML: append TOML (\\n for newlines) to that variant's config file")
    p.add_argument("--ours-socket", default=None)
    p.add_argument("--containerd-socket", default=None)
    p.add_argument("--json", type=Path, default=None, help="write every sample here")
    p.add_argument("--reference", default="containerd", help="the daemon ratios are taken against")
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.floors = [f for f in args.floors.split(",") if f]
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    raw: dict[str, dict[str, list[float]]] = {}
    with started(args) as clients:
        daemons = [c for c in clients if not c.key.startswith("floor-")]
        for c in daemons:
            c.prepare()
        keys = [c.key for c in clients]
        print(f"median per call, ×: median of the paired ratios to {args.reference}, cpu: server CPU µs per call")
        print(f"{'method':<15} | " + " | ".join(f"{k:<25}" for k in keys), flush=True)
        for method in methods:
            chosen = clients if method in SERVED_BY_FLOORS else daemons
            n = args.ctr_n if method in ("ctr-version", "connect-version") else args.n
            samples, cpu = measure(chosen, method, n, min(args.warmup, n))
            raw[method] = samples
            row = summarize(method, samples, cpu, args.reference)
            rows.append(row)
            print(fmt(row, keys), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"argv": sys.argv, "pid": os.getpid(), "rows": rows, "samples": raw}))


if __name__ == "__main__":
    main()
