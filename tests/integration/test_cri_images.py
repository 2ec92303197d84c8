"""The CRI ImageService (and RuntimeService basics) of our daemon, differentially against containerd 1.6.

Each feature test runs against both engines (parametrized): our daemon and Debian's
containerd with its CRI plugin, configured the same way (the `[plugins."io.containerd.grpc.v1.cri"]`
section of tests/fixtures/containerd.py: mirrors send the 127.0.0.1 registries over plain
HTTP). Clients: pycrictl, raw gRPC for status codes, and the real ctr for the `k8s.io`
image records. The status-code test talks to both engines in one test and compares.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures import images
from tests.fixtures.containerd import CriOptions, cri_config, running_containerd
from tests.fixtures.procs import wait_for
from tests.fixtures.registry import Registry, running_registry

from .daemon import running_daemon

pytestmark = pytest.mark.root

PYCRICTL = str(Path(sys.executable).parent / "pycrictl")
CTR = "/usr/bin/ctr"


@dataclass
class Registries:
    plain: Registry
    basic: Registry
    image: images.BuiltImage
    repo: str
    tag: str
    digest: str
    multi: images.BuiltImage

    @property
    def ref(self) -> str:
        return self.plain.ref(self.repo, self.tag)

    @property
    def digest_ref(self) -> str:
        return f"{self.plain.host}/{self.repo}@{self.digest}"

    @property
    def size(self) -> int:
        img = self.image
        return img.manifest.size + img.config.size + sum(layer.size for layer in img.layers)


@dataclass
class Engine:
    name: str
    address: str
    root: Path
    log: Path

    @property
    def endpoint(self) -> str:
        return f"unix://{self.address}"

    def crictl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PYCRICTL, "-r", self.endpoint, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"[{self.name}] pycrictl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n"
                                 f"{r.stderr}\n--- log ---\n{self.log.read_text(errors='replace')[-3000:]}")
        return r

    def crictl_json(self, *args: str) -> Any:
        return json.loads(self.crictl(*args).stdout)

    def ctr(self, *args: str) -> str:
        r = subprocess.run([CTR, "-a", self.address, "-n", "k8s.io", *args], capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0, f"[{self.name}] ctr {' '.join(args)}: {r.stderr}"
        return r.stdout

    @contextlib.contextmanager
    def stubs(self) -> Iterator[tuple[Any, Any]]:
        with grpc.insecure_channel(f"unix:{self.address}") as ch:
            yield pb_grpc.RuntimeServiceStub(ch), pb_grpc.ImageServiceStub(ch)

    def code(self, call: str, request: Any) -> tuple[grpc.StatusCode, Any]:
        """(status code, response or error message) of one ImageService/RuntimeService call."""
        with self.stubs() as (rt, img):
            stub = rt if hasattr(rt, call) else img
            try:
                return grpc.StatusCode.OK, getattr(stub, call)(request, timeout=120)
            except grpc.RpcError as exc:
                return exc.code(), exc.details()


@pytest.fixture(scope="module")
def registries(busybox_image: images.BuiltImage, multiplatform_image: images.BuiltImage) -> Iterator[Registries]:
    with running_registry() as plain, running_registry(auth="basic") as basic:
        digest = images.push_to_registry(busybox_image, plain.url, "cri/busybox", "v1")
        images.push_to_registry(multiplatform_image, plain.url, "cri/multi", "v1")
        user, pw = basic.user()
        images.push_to_registry(busybox_image, basic.url, "cri/private", "v1",
                                auth=images.RegistryAuth(user, pw))
        yield Registries(plain, basic, busybox_image, "cri/busybox", "v1", digest, multiplatform_image)


def _cri_options(regs: Registries) -> CriOptions:
    return CriOptions(sandbox_image=regs.ref, insecure_registries=[regs.plain.host, regs.basic.host])


@contextlib.contextmanager
def _ours(regs: Registries) -> Iterator[Engine]:
    opts = _cri_options(regs).resolved()
    with running_daemon("version = 2\n" + cri_config(Path("/nonexistent"), opts, "overlayfs")) as d:
        yield Engine("pycontainerd", d.address, d.root, d.log)


@contextlib.contextmanager
def _theirs(regs: Registries) -> Iterator[Engine]:
    if not Path("/usr/bin/containerd").exists():
        pytest.skip("needs containerd (apt-get install containerd)")
    with running_containerd(cri=_cri_options(regs)) as c:
        yield Engine("containerd", c.address, c.root, c.log)


@pytest.fixture(scope="module")
def ours(registries: Registries) -> Iterator[Engine]:
    with _ours(registries) as e:
        yield e


@pytest.fixture(scope="module")
def theirs(registries: Registries) -> Iterator[Engine]:
    with _theirs(registries) as e:
        yield e


@pytest.fixture(params=["pycontainerd", "containerd"])
def engine(request: pytest.FixtureRequest) -> Engine:
    fixture = "ours" if request.param == "pycontainerd" else "theirs"
    e = request.getfixturevalue(fixture)
    assert isinstance(e, Engine)
    return e


def _rmi_all(engine: Engine) -> None:
    for image_id in engine.crictl("images", "-q").stdout.split():
        engine.crictl("rmi", image_id)


def test_version_and_status(engine: Engine) -> None:
    out = engine.crictl("version").stdout
    assert f"RuntimeName:  {engine.name}" in out
    assert "RuntimeApiVersion:  v1" in out
    code, resp = engine.code("Status", pb.StatusRequest(verbose=True))
    assert code == grpc.StatusCode.OK, resp
    conditions = {c.type: c for c in resp.status.conditions}
    assert conditions["RuntimeReady"].status is True
    if engine.name == "pycontainerd":  # no CNI yet
        assert conditions["NetworkReady"].status is False
        assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
    info = engine.crictl_json("info")
    assert info["config"]["sandboxImage"]
    code, _ = engine.code("UpdateRuntimeConfig", pb.UpdateRuntimeConfigRequest(
        runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.99.0.0/16"))))
    assert code == grpc.StatusCode.OK


def test_pull_by_tag_list_inspect_rmi(engine: Engine, registries: Registries) -> None:
    _rmi_all(engine)
    ref = registries.ref
    r = engine.crictl("pull", ref)
    image_id = r.stdout.split()[-1]
    assert image_id == registries.image.config.digest, r.stdout

    (img,) = engine.crictl_json("images", "-o", "json")["images"]
    assert img["id"] == image_id
    assert img["repoTags"] == [ref]
    assert img["repoDigests"] == [registries.digest_ref]
    assert int(img["size"]) == registries.size

    table = engine.crictl("images", "--digests").stdout.splitlines()
    assert table[0].split()[:3] == ["IMAGE", "TAG", "DIGEST"]
    assert table[1].split()[:3] == [ref.rsplit(":", 1)[0], registries.tag, registries.digest.split(":")[1][:13]]

    st = engine.crictl_json("inspecti", ref)
    assert st["status"]["id"] == image_id
    assert st["info"]["imageSpec"]["rootfs"]["diff_ids"] == registries.image.diff_ids
    assert st["info"]["chainID"].startswith("sha256:")
    # by id and by digest too
    assert engine.crictl_json("inspecti", image_id)["status"]["id"] == image_id
    assert engine.crictl_json("inspecti", registries.digest_ref)["status"]["id"] == image_id

    # the image records in k8s.io, with containerd's label
    listing = engine.ctr("images", "ls")
    for name in (ref, registries.digest_ref, image_id):
        line = next((line for line in listing.splitlines() if line.startswith(name + " ")), None)
        assert line is not None, f"[{engine.name}] {name} missing from ctr images ls:\n{listing}"
        assert "io.cri-containerd.image=managed" in line, line

    # the unpacked top snapshot, labelled with its chain id as containerd's daemon-side unpacker does
    chain = st["info"]["chainID"]
    snap = json.loads(engine.ctr("snapshots", "--snapshotter", "overlayfs", "info", chain))
    assert snap["Kind"] == "Committed"
    assert snap["Labels"]["containerd.io/snapshot.ref"] == chain

    r = engine.crictl("rmi", ref)
    assert f"Deleted: {ref}" in r.stdout
    assert engine.crictl("images", "-q").stdout.split() == []
    assert engine.ctr("images", "ls", "-q").split() == []

    def collected() -> bool:  # no record pins the image any more: GC takes content and snapshots
        return (engine.ctr("content", "ls", "-q").split() == []
                and engine.ctr("snapshots", "--snapshotter", "overlayfs", "ls").splitlines()[1:] == [])

    wait_for(collected, 20, f"[{engine.name}] the removed image's content and snapshots to be collected")
    r = engine.crictl("rmi", ref, check=False)
    assert r.returncode == 1 and "no such image" in r.stderr


def test_pull_by_digest_rmi_by_id(engine: Engine, registries: Registries) -> None:
    _rmi_all(engine)
    r = engine.crictl("pull", registries.digest_ref)
    image_id = r.stdout.split()[-1]
    (img,) = engine.crictl_json("images", "-o", "json")["images"]
    assert img["repoTags"] == []
    assert img["repoDigests"] == [registries.digest_ref]
    # a second name for the same image: one image, two references
    engine.crictl("pull", registries.ref)
    (img,) = engine.crictl_json("images", "-o", "json")["images"]
    assert img["repoTags"] == [registries.ref]
    engine.crictl("rmi", image_id)
    assert engine.crictl("images", "-q").stdout.split() == []
    assert engine.ctr("images", "ls", "-q").split() == []


def test_pull_multiplatform_index(engine: Engine, registries: Registries) -> None:
    """An index: this host's manifest is unpacked; the repo digest is the index's; the size counts it."""
    _rmi_all(engine)
    multi = registries.multi
    ref = registries.plain.ref("cri/multi", "v1")
    image_id = engine.crictl("pull", ref).stdout.split()[-1]
    assert image_id == multi.config.digest
    (img,) = engine.crictl_json("images", "-o", "json")["images"]
    assert img["repoDigests"] == [f"{registries.plain.host}/cri/multi@{multi.target.digest}"]
    expected = multi.target.size + multi.manifest.size + multi.config.size + sum(x.size for x in multi.layers)
    assert int(img["size"]) == expected
    engine.crictl("rmi", ref)


def test_concurrent_pulls_of_one_image(engine: Engine, registries: Registries) -> None:
    _rmi_all(engine)
    req = pb.PullImageRequest(image=pb.ImageSpec(image=registries.ref))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: engine.code("PullImage", req), range(4)))
    assert [c for c, _ in results] == [grpc.StatusCode.OK] * 4, results
    assert {r.image_ref for _, r in results} == {registries.image.config.digest}
    (img,) = engine.crictl_json("images", "-o", "json")["images"]
    assert img["repoTags"] == [registries.ref]


def test_pulled_image_survives_gc(engine: Engine, registries: Registries) -> None:
    """The image records are GC roots: a collection keeps the content and the unpacked snapshots."""
    engine.crictl("pull", registries.ref)
    before = sorted(engine.ctr("content", "ls", "-q").split())
    snaps = engine.ctr("snapshots", "--snapshotter", "overlayfs", "ls").splitlines()[1:]
    assert before and snaps
    lease = f"gc-{uuid.uuid4().hex[:8]}"
    engine.ctr("leases", "create", "--id", lease)
    engine.ctr("leases", "delete", "--sync", lease)  # runs a collection before answering
    assert sorted(engine.ctr("content", "ls", "-q").split()) == before
    assert engine.ctr("snapshots", "--snapshotter", "overlayfs", "ls").splitlines()[1:] == snaps
    assert engine.crictl_json("inspecti", registries.ref)["status"]["id"] == registries.image.config.digest


def test_imagefsinfo(engine: Engine, registries: Registries) -> None:
    engine.crictl("pull", registries.ref)

    def usage() -> dict[str, Any] | None:
        fs: dict[str, Any] = engine.crictl_json("imagefsinfo")["status"]["imageFilesystems"][0]
        return fs if int(fs["usedBytes"]["value"]) > 0 else None

    # containerd updates its numbers every stats_collect_period (10 s); ours are current
    fs = wait_for(usage, 30, f"[{engine.name}] imagefsinfo to count the pulled image", interval=0.5)
    assert fs["fsId"]["mountpoint"] == str(engine.root / "io.containerd.snapshotter.v1.overlayfs")
    assert int(fs["inodesUsed"]["value"]) > 0
    assert int(fs["timestamp"]) > 0


def test_pull_with_credentials(engine: Engine, registries: Registries) -> None:
    ref = registries.basic.ref("cri/private", "v1")
    user, pw = registries.basic.user()
    code, msg = engine.code("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=ref)))
    assert code != grpc.StatusCode.OK
    code, msg = engine.code("PullImage", pb.PullImageRequest(
        image=pb.ImageSpec(image=ref), auth=pb.AuthConfig(username=user, password="wrong")))
    assert code != grpc.StatusCode.OK
    assert any(w in msg.lower() for w in ("401", "unauthorized", "denied", "authoriz")), msg
    engine.crictl("pull", "--creds", f"{user}:{pw}", ref)
    auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
    code, resp = engine.code("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=ref),
                                                              auth=pb.AuthConfig(auth=auth)))
    assert code == grpc.StatusCode.OK and resp.image_ref == registries.image.config.digest


def test_pull_missing_image(engine: Engine, registries: Registries) -> None:
    ref = registries.plain.ref("cri/missing", uuid.uuid4().hex[:8])
    code, msg = engine.code("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=ref)))
    assert code == grpc.StatusCode.NOT_FOUND, (code, msg)
    assert "not found" in msg
    r = engine.crictl("pull", ref, check=False)
    assert r.returncode == 1


def test_status_codes_match_containerd(ours: Engine, theirs: Engine, registries: Registries) -> None:
    """Bad inputs: each engine answers with the same status code (and the same shape of answer)."""
    bad_id = "sha256:" + "0" * 64
    for e in (ours, theirs):  # one image on each, so the id prefixes below are unique
        _rmi_all(e)
        e.crictl("pull", registries.ref)
    cases: list[tuple[str, Any]] = [
        ("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=""))),
        ("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image="Invalid@@ref"))),
        ("PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=f"{registries.plain.host}/cri/busybox:nope"))),
        ("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=bad_id))),
        ("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image="docker.io/library/absent:1"))),
        ("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=""))),  # a prefix of every id
        ("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=registries.image.config.digest[:14]))),
        ("ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=registries.image.config.digest[7:19]))),
        ("RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image="docker.io/library/absent:1"))),
        ("RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image=bad_id))),
        ("ListImages", pb.ListImagesRequest()),
        ("ImageFsInfo", pb.ImageFsInfoRequest()),
        ("Version", pb.VersionRequest()),
    ]
    mismatches = []
    for call, req in cases:
        ours_code, ours_resp = ours.code(call, req)
        theirs_code, theirs_resp = theirs.code(call, req)
        if ours_code != theirs_code:
            mismatches.append(f"{call}({req}): ours {ours_code} {ours_resp!r}, containerd {theirs_code} "
                              f"{theirs_resp!r}")
        elif call == "ImageStatus" and ours_code == grpc.StatusCode.OK:
            assert ours_resp.HasField("image") == theirs_resp.HasField("image"), req
    assert not mismatches, "\n".join(mismatches)


def test_cri_plugin_listed(ours: Engine) -> None:
    r = subprocess.run([CTR, "-a", ours.address, "plugins", "ls"], capture_output=True, text=True, timeout=30,
                       check=True)
    line = next(line for line in r.stdout.splitlines() if line.split()[:2] == ["io.containerd.grpc.v1", "cri"])
    assert line.split()[-1] == "ok", line


# -- fields and calls newer than containerd 1.6's CRI (cri-api 1.29 .. 1.36) ----------------------------
def test_imagefsinfo_container_filesystems(engine: Engine, registries: Registries) -> None:
    """1.29's container_filesystems: ours names the snapshotter's filesystem and counts the writable layers;
    containerd 1.6 predates the field and its answer has none."""
    engine.crictl("pull", registries.ref)
    root = str(engine.root / "io.containerd.snapshotter.v1.overlayfs")
    code, resp = engine.code("ImageFsInfo", pb.ImageFsInfoRequest())
    assert code == grpc.StatusCode.OK, resp
    if engine.name == "containerd":
        assert len(resp.container_filesystems) == 0
        return
    (before,) = resp.container_filesystems
    assert before.fs_id.mountpoint == resp.image_filesystems[0].fs_id.mountpoint == root
    assert before.timestamp > 0
    # a writable snapshot (what a container's layer is) with 1 MiB in it counts there
    key = f"writable-{uuid.uuid4().hex[:8]}"
    engine.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", key)
    try:
        cmd = engine.ctr("snapshots", "--snapshotter", "overlayfs", "mounts", "/mnt", key).split()
        upper = Path(cmd[cmd.index("bind") + 1])  # "mount -t bind <dir> /mnt -o rbind,rw"
        (upper / "blob").write_bytes(b"x" * (1 << 20))
        code, resp = engine.code("ImageFsInfo", pb.ImageFsInfoRequest())
        (after,) = resp.container_filesystems
        assert after.used_bytes.value >= before.used_bytes.value + (1 << 20)
        assert after.inodes_used.value > before.inodes_used.value
        assert resp.image_filesystems[0].used_bytes.value >= after.used_bytes.value  # images count every snapshot
    finally:
        engine.ctr("snapshots", "--snapshotter", "overlayfs", "rm", key)


def test_stream_images(engine: Engine, registries: Registries) -> None:
    engine.crictl("pull", registries.ref)
    with engine.stubs() as (_, img):
        if engine.name == "containerd":
            with pytest.raises(grpc.RpcError) as exc:
                list(img.StreamImages(pb.StreamImagesRequest(), timeout=60))
            assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
            return
        streamed = [i for r in img.StreamImages(pb.StreamImagesRequest(), timeout=60) for i in r.images]
        listed = list(img.ListImages(pb.ListImagesRequest(), timeout=60).images)
    assert sorted(i.id for i in streamed) == sorted(i.id for i in listed)
    assert registries.image.config.digest in {i.id for i in streamed}


def test_pull_with_runtime_handler(engine: Engine, registries: Registries) -> None:
    """ImageSpec.runtime_handler (1.29+): the default handler's name pulls; containerd 1.6 ignores the field,
    ours refuses a handler that is not configured instead of pulling for the wrong runtime."""
    code, resp = engine.code("PullImage", pb.PullImageRequest(
        image=pb.ImageSpec(image=registries.ref, runtime_handler="runc", user_specified_image=registries.ref)))
    assert code == grpc.StatusCode.OK, resp
    assert resp.image_ref == registries.image.config.digest
    code, resp = engine.code("PullImage", pb.PullImageRequest(
        image=pb.ImageSpec(image=registries.ref, runtime_handler="no-such-handler")))
    if engine.name == "containerd":
        assert code == grpc.StatusCode.OK, resp
    else:
        assert code == grpc.StatusCode.NOT_FOUND, resp
        assert "no-such-handler" in resp and "configured" in resp


def test_update_pod_sandbox_resources_of_a_missing_pod(engine: Engine) -> None:
    """1.33's call: ours has it (test_cri_pods.py::test_update_pod_sandbox_resources) and answers NOT_FOUND
    for a pod it does not have; containerd 1.6 does not have it (UNIMPLEMENTED)."""
    code, msg = engine.code("UpdatePodSandboxResources", pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="x"))
    if engine.name == "pycontainerd":
        assert code == grpc.StatusCode.NOT_FOUND, msg
        assert "'x'" in msg, msg
    else:
        assert code == grpc.StatusCode.UNIMPLEMENTED, msg


def test_checkpoint_container_says_why_not(engine: Engine) -> None:
    """No CRIU here: UNIMPLEMENTED on both (containerd 1.6: 'method CheckpointContainer not implemented'
    for any id); ours says why."""
    code, msg = engine.code("CheckpointContainer", pb.CheckpointContainerRequest(container_id="f" * 64,
                                                                                 location="/tmp/never.tar"))
    assert code == grpc.StatusCode.UNIMPLEMENTED, msg
    if engine.name == "pycontainerd":
        assert "cannot checkpoint" in msg and "CRIU" in msg, msg
    assert not Path("/tmp/never.tar").exists()
