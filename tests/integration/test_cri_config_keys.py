"""The CRI plugin's own keys seen from inside containers, on our daemon and on containerd 1.6's CRI with
the same config: ``enable_unprivileged_ports``, ``enable_unprivileged_icmp``, ``unset_seccomp_profile``,
``disable_proc_mount``, ``device_ownership_from_security_context``; with the defaults kept, the image's
VOLUMEs (``ignore_image_defined_volumes = false``; one that is a file in the image refused at
CreateContainer) and an RDT class refused (``containerd.ignore_rdt_not_enabled_errors = false``).  One
pair of engines for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from tests.fixtures import images
from tests.fixtures.images import d, f

from .test_cri_pods import Engine, Setup, _ours, _theirs, busybox, setup  # noqa: F401
from .test_cri_security import _pod, _sc

pytestmark = pytest.mark.root
# ruff: noqa: F811 - the fixtures imported above are parameters here

KEYS = """
enable_unprivileged_ports = true
enable_unprivileged_icmp = true
unset_seccomp_profile = "runtime/default"
disable_proc_mount = true
device_ownership_from_security_context = true
"""


@pytest.fixture(scope="module")
def volimage(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with ``VOLUME /data`` whose image content is a file, owned 1234:5678, mode 0750."""
    dest = tmp_path_factory.mktemp("volimage")
    img = images.build_busybox_image(dest, name="docker.io/library/pycd-volume:1", volumes=["/data"], extra_layers=[
        [d("data", 0o750, uid=1234, gid=5678), f("data/seed.txt", "seed\n", uid=1234, gid=5678)]])
    images.push_to_registry(img, setup.registry.url, "cri/volume", "1")
    return setup.registry.ref("cri/volume", "1")


@pytest.fixture(scope="module")
def filevolimage(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox with ``VOLUME /etc/app.conf`` where the image has a regular file."""
    dest = tmp_path_factory.mktemp("filevolimage")
    img = images.build_busybox_image(dest, name="docker.io/library/pycd-filevolume:1", volumes=["/etc/app.conf"],
                                     extra_layers=[[f("etc/app.conf", "from the image\n")]])
    images.push_to_registry(img, setup.registry.url, "cri/filevolume", "1")
    return setup.registry.ref("cri/filevolume", "1")


@pytest.fixture(scope="module")
def ours_k(setup: Setup) -> Iterator[Engine]:
    with _ours(setup, cri_extra=KEYS) as e:
        yield e


@pytest.fixture(scope="module")
def theirs_k(setup: Setup) -> Iterator[Engine]:
    with _theirs(setup, cri_extra=KEYS) as e:
        yield e


@pytest.fixture(params=["pycontainerd", "containerd"])
def engine(request: pytest.FixtureRequest) -> Engine:
    e = request.getfixturevalue("ours_k" if request.param == "pycontainerd" else "theirs_k")
    assert isinstance(e, Engine)
    return e


def test_keys_seen_inside(engine: Engine, busybox: str, tmp_path: Path) -> None:
    with _pod(engine, busybox, tmp_path) as pod:
        user = {"run_as_user": pb.Int64Value(value=1000), "run_as_group": pb.Int64Value(value=2000)}
        cid = pod.run(_sc(**user), devices=[pb.Device(container_path="/dev/xnull", host_path="/dev/null",
                                                      permissions="rw")])
        _, out = pod.sh(cid, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range")
        assert out.split() == ["0", "0", "2147483647"], f"[{engine.name}] {out}"
        assert pod.status_field(cid, "Seccomp") == "2", engine.name  # unset_seccomp_profile
        _, out = pod.sh(cid, "stat -c '%u %g' /dev/xnull; grep -c ' /proc/timer_list ' /proc/self/mountinfo")
        assert out.split() == ["1000", "2000", "1"], f"[{engine.name}] {out}"  # owner; /proc/timer_list masked


def test_image_volumes_and_rdt_classes(engine: Engine, busybox: str, volimage: str, tmp_path: Path) -> None:
    engine.crictl("pull", volimage)
    with _pod(engine, busybox, tmp_path) as pod:
        pod.busybox = volimage
        cid = pod.run(_sc())
        rc, out = pod.sh(cid, "stat -c '%u %g %a' /data; cat /data/seed.txt; grep -c ' /data ' /proc/self/mountinfo;"
                              " echo x > /data/new && echo wrote")
        assert rc == 0 and out.split() == ["1234", "5678", "750", "seed", "1", "wrote"], f"[{engine.name}] {out}"
        pod.busybox = busybox
        code, msg = pod.create(_sc(), annotations={"io.kubernetes.cri.rdt-class": "gold"})
        assert code != grpc.StatusCode.OK, f"[{engine.name}] an RDT class was taken without RDT: {msg}"


def test_an_image_volume_that_is_a_file(engine: Engine, busybox: str, filevolimage: str, tmp_path: Path) -> None:
    """An image VOLUME whose path is a regular file in the image is refused at CreateContainer, by both
    engines, leaving no container record or snapshot.  containerd 1.6 answers UNKNOWN "taking runtime
    copy of volume: source <its temp mount>/etc/app.conf is not directory"; ours FAILED_PRECONDITION
    naming the volume and what to do (ours created the container with an empty directory for it, and
    runc refused to start it: "not a directory").  A CRI mount at that path takes the volume's place:
    the container runs on both."""
    engine.crictl("pull", filevolimage)
    with _pod(engine, busybox, tmp_path) as pod:
        pod.busybox = filevolimage
        records, snapshots = engine.ctr("containers", "ls", "-q"), engine.ctr("snapshots", "ls")
        code, msg = pod.create(_sc())
        if engine.name == "pycontainerd":
            assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, msg)
            assert "image volume '/etc/app.conf': the image has a regular file" in msg and "\n" not in msg, msg
        else:
            assert code == grpc.StatusCode.UNKNOWN and "/etc/app.conf is not directory" in msg, (code, msg)
        assert engine.crictl("ps", "-a", "-q", "--pod", pod.id).stdout.strip() == ""
        assert (engine.ctr("containers", "ls", "-q"), engine.ctr("snapshots", "ls")) == (records, snapshots)
        conf = tmp_path / "app.conf"
        conf.write_text("from the host\n")
        cid = pod.run(_sc(), mounts=[pb.Mount(container_path="/etc/app.conf", host_path=str(conf), readonly=True)])
        assert pod.sh(cid, "cat /etc/app.conf") == (0, "from the host\n"), engine.name
