"""CRI image keys through a real daemon and the real docker-registry (behind ``FaultProxy``):

- ``image_pull_progress_timeout``: a registry that stops sending a layer cancels the pull
  after that long, naming the image (containerd's "no progress" cancel);
- ``containerd.discard_unpacked_layers``: after the pull the layer blobs are collected from
  the content store while the image stays usable (its snapshots are kept).
"""

from __future__ import annotations

import time

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures.procs import wait_for
from tests.fixtures.pytest_plugin import PushedImage
from tests.fixtures.registry import Fault, FaultProxy

from .daemon import running_daemon

pytestmark = pytest.mark.root

CRI = "io.containerd.grpc.v1.cri"


def _config(host: str, extra: str = "", containerd: str = "") -> str:
    return (f'version = 2\n[plugins."{CRI}"]\n{extra}\n'
            f'[plugins."{CRI}".containerd]\n{containerd}\n'
            f'[plugins."{CRI}".registry.mirrors."{host}"]\nendpoint = ["http://{host}"]\n')


def _pull(address: str, ref: str, timeout: float = 120) -> str:
    with grpc.insecure_channel(f"unix:{address}") as ch:
        r = pb_grpc.ImageServiceStub(ch).PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=timeout)
        return str(r.image_ref)


def test_a_pull_without_progress_is_cancelled(pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    layer = pushed_busybox.image.layers[0]
    fault_proxy.add(Fault("delay", path=f"/blobs/{layer.digest}$", method="GET", seconds=6))
    ref = fault_proxy.ref(pushed_busybox.repo, pushed_busybox.tag)
    with running_daemon(_config(fault_proxy.host, 'image_pull_progress_timeout = "1s"')) as d:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            _pull(str(d.address), ref)
        took = time.monotonic() - t0
        assert f"cancel pulling image {ref} because of no progress in 1s" in str(exc.value.details())
        assert took < 5.5, took  # not the 6 s the registry stalls


def test_discard_unpacked_layers(pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    ref = fault_proxy.ref(pushed_busybox.repo, pushed_busybox.tag)
    layers = [layer.digest for layer in pushed_busybox.image.layers]
    with running_daemon(_config(fault_proxy.host, containerd="discard_unpacked_layers = true")) as d:
        image_id = _pull(str(d.address), ref)
        assert image_id == pushed_busybox.image.config.digest

        def layers_gone() -> bool:
            content = d.ctr("content", "ls", "-q", namespace="k8s.io").stdout.split()
            return not any(digest in content for digest in layers)

        wait_for(layers_gone, 60, "the unpacked layer blobs to be collected")
        content = d.ctr("content", "ls", "-q", namespace="k8s.io").stdout.split()
        assert pushed_busybox.image.config.digest in content  # the image itself stays
        assert d.ctr("snapshots", "ls", namespace="k8s.io").stdout.count("Committed") >= len(layers)
        assert image_id in d.ctr("images", "ls", "-q", namespace="k8s.io").stdout.split()



def test_snapshot_annotations_when_not_disabled(pushed_busybox: PushedImage, fault_proxy: FaultProxy) -> None:
    """``disable_snapshot_annotations = false``: every snapshot the pull unpacked carries the image's
    ``containerd.io/snapshot/cri.*`` labels (containerd passes them to the snapshotter)."""
    import json

    ref = fault_proxy.ref(pushed_busybox.repo, pushed_busybox.tag)
    with running_daemon(_config(fault_proxy.host, containerd="disable_snapshot_annotations = false")) as d:
        _pull(str(d.address), ref)
        names = [line.split()[0] for line in d.ctr("snapshots", "ls", namespace="k8s.io").stdout.splitlines()[1:]]
        assert len(names) == len(pushed_busybox.image.layers)
        for name in names:
            labels = json.loads(d.ctr("snapshots", "info", name, namespace="k8s.io").stdout)["Labels"]
            assert labels["containerd.io/snapshot/cri.image-ref"] == ref
            assert labels["containerd.io/snapshot/cri.manifest-digest"] == pushed_busybox.image.manifest.digest
            assert labels["containerd.io/snapshot/cri.layer-digest"] in {x.digest for x in pushed_busybox.image.layers}
    with running_daemon(_config(fault_proxy.host)) as d:  # the default: none
        _pull(str(d.address), ref)
        for line in d.ctr("snapshots", "ls", namespace="k8s.io").stdout.splitlines()[1:]:
            info = json.loads(d.ctr("snapshots", "info", line.split()[0], namespace="k8s.io").stdout)
            assert not any(k.startswith("containerd.io/snapshot/cri.") for k in info.get("Labels", {}))
