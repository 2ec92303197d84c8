"""W10: the CRI side by side (issue 11) — RunPodSandbox; CreateContainer + StartContainer in that pod;
StopPodSandbox + RemovePodSandbox — on pycontainerd's CRI plugin and containerd 1.6's.

Both daemons are started for W10 with their CRI plugin on and the same settings (the containerd
fixture's: sandbox image = busybox running ``sleep inf`` from the bench registry, that registry
over plain HTTP, one CNI conflist of bridge + host-local on a network, bridge and /24 of each
daemon's own); with ``--ours-socket``/``--containerd-socket`` the given daemons are used and must
serve CRI.  One client for both: the generated ``runtime.v1`` gRPC stubs, one channel per daemon
opened before the samples.  Each run is, per daemon (A/B, then B/A): a pod, then a ``sleep``
container in it, then the pod stopped and removed — three samples, each after both daemons are
quiescent, its deferred time measured (see ``quiesce``).  Pods log to a directory of the run
(kubelet does), with the container's log file in it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures.containerd import CriOptions

from .targets import ContainerdTarget, OursTarget, Target
from .workloads import Bench, Images, Metric

RPC_TIMEOUT = 120.0
TITLES = {"runp": "W10 CRI RunPodSandbox", "create_start": "W10 CRI CreateContainer + StartContainer",
          "stopp_rmp": "W10 CRI StopPodSandbox + RemovePodSandbox"}


class CriError(RuntimeError):
    """A CRI call failed: recorded as a failed sample (or a failed setup), the bench goes on."""


@contextlib.contextmanager
def _rpc(what: str) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise CriError(f"{what}: {code.name if code else 'error'}: {details}") from None


class Cri:
    """The CRI of one target, through the generated stubs (the same client for both daemons)."""

    def __init__(self, t: Target) -> None:
        self.channel = grpc.insecure_channel(f"unix:{t.address}")
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.img = pb_grpc.ImageServiceStub(self.channel)

    def pull(self, ref: str) -> None:
        with _rpc(f"PullImage {ref}"):
            self.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=600)

    def remove_all_pods(self) -> None:
        with _rpc("ListPodSandbox"):
            pods = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT).items
        for p in pods:
            with contextlib.suppress(grpc.RpcError):
                self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=RPC_TIMEOUT)
                self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=RPC_TIMEOUT)

    def close(self) -> None:
        self.channel.close()


def pod_config(name: str, log_dir: Path) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="bench", uid=uuid.uuid4().hex, attempt=0),
        hostname=name, log_directory=str(log_dir), labels={"app": "bench"})


def container_config(image: str) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleeper"), image=pb.ImageSpec(image=image),
                              command=["sleep", "1000000"], log_path="sleeper.log", labels={"app": "bench"})


def w10(bench: Bench) -> None:
    """The three CRI metrics over ``bench``'s targets (which must serve CRI)."""
    imgs = bench.imgs
    ms = {k: bench.metric("W10", k, title, "s", cmd) for k, title, cmd in (
        ("runp", TITLES["runp"], "RunPodSandbox {POD} (CNI bridge + host-local)"),
        ("create_start", TITLES["create_start"], "CreateContainer + StartContainer `sleep` in {POD}"),
        ("stopp_rmp", TITLES["stopp_rmp"], "StopPodSandbox + RemovePodSandbox {POD} (its container running)"))}
    metrics = list(ms.values())
    clients: dict[str, Cri] = {}
    try:
        for t in bench.live(*metrics):
            def setup(t: Target = t) -> None:
                c = Cri(t)
                clients[t.label] = c
                c.remove_all_pods()
                c.pull(imgs.pause_ref)
                c.pull(imgs.busybox_ref)
            bench.attempt(metrics, t, setup)
        logs = bench.workdir / "w10-logs"
        for i, order in bench.alternate(bench.runs("W10"), *metrics):
            for t in order:
                c = clients[t.label]
                name = f"{t.prefix}-w10-{i}"
                cfg = pod_config(name, logs / name)
                (logs / name).mkdir(parents=True, exist_ok=True)
                pod: dict[str, str] = {}

                def runp(c: Cri = c, cfg: pb.PodSandboxConfig = cfg, pod: dict[str, str] = pod
                         ) -> dict[str, float | tuple[float, dict[str, object]]]:
                    t0 = time.perf_counter()
                    with _rpc("RunPodSandbox"):
                        resp = c.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=RPC_TIMEOUT)
                    dt = time.perf_counter() - t0
                    pod["id"] = resp.pod_sandbox_id
                    return {ms["runp"].key: dt}

                bench.sample([ms["runp"]], t, i, runp)
                if "id" not in pod:
                    continue

                def create_start(c: Cri = c, cfg: pb.PodSandboxConfig = cfg, pod: dict[str, str] = pod
                                 ) -> dict[str, float | tuple[float, dict[str, object]]]:
                    t0 = time.perf_counter()
                    with _rpc("CreateContainer + StartContainer"):
                        cid = c.rt.CreateContainer(pb.CreateContainerRequest(
                            pod_sandbox_id=pod["id"], config=container_config(imgs.busybox_ref),
                            sandbox_config=cfg), timeout=RPC_TIMEOUT).container_id
                        c.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)
                    return {ms["create_start"].key: time.perf_counter() - t0}

                def stopp_rmp(c: Cri = c, pod: dict[str, str] = pod
                              ) -> dict[str, float | tuple[float, dict[str, object]]]:
                    t0 = time.perf_counter()
                    with _rpc("StopPodSandbox + RemovePodSandbox"):
                        c.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod["id"]), timeout=RPC_TIMEOUT)
                        c.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod["id"]),
                                              timeout=RPC_TIMEOUT)
                    return {ms["stopp_rmp"].key: time.perf_counter() - t0}

                bench.sample([ms["create_start"]], t, i, create_start)
                bench.sample([ms["stopp_rmp"]], t, i, stopp_rmp)
                with contextlib.suppress(CriError):  # a failed sample left its pod: not in the next one
                    c.remove_all_pods()
            bench.log(f"  W10 run {i + 1}: " + " · ".join(f"{k} {_last(m)}" for k, m in ms.items()))
    finally:
        for c in clients.values():
            with contextlib.suppress(CriError):
                c.remove_all_pods()
            c.close()


def _last(m: Metric) -> str:
    parts = []
    for who, xs in m.samples.items():
        if xs and xs[-1].value is not None:
            parts.append(f"{who} {xs[-1].value * 1000:.0f}ms")
    return ", ".join(parts) or "-"


@contextlib.contextmanager
def cri_targets(wanted: list[str], imgs: Images, started: Callable[[Target], contextlib.AbstractContextManager[Target]]
                ) -> Iterator[list[Target]]:
    """Fresh daemons with their CRI plugin on (each on a CNI network of its own), in ``wanted`` order."""
    registry = imgs.busybox_ref.split("/", 1)[0]
    opts = CriOptions(sandbox_image=imgs.pause_ref, insecure_registries=[registry])
    with contextlib.ExitStack() as stack:
        out: list[Target] = []
        if "ours" in wanted:
            out.append(stack.enter_context(started(OursTarget(cri=opts))))
        if "containerd" in wanted:
            out.append(stack.enter_context(started(ContainerdTarget(cri=opts))))
        yield out
