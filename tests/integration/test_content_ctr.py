"""Content, images and leases against our daemon with the real ``ctr`` (and raw gRPC for the
Write protocol details ctr relies on: STAT/WRITE/COMMIT offsets, resume, locks, AlreadyExists).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2 as cpb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as cpb_grpc
from tests.fixtures.procs import wait_for

from .daemon import CTR, Daemon

pytestmark = pytest.mark.root


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ctr_bytes(
    d: Daemon, *args: str, data: bytes = b"", namespace: str = "default"
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CTR, "-a", d.address, "-n", namespace, *args], input=data, capture_output=True, timeout=120, check=False
    )


def content_digests(d: Daemon, namespace: str = "default") -> list[str]:
    return sorted(d.ctr("content", "ls", "-q", namespace=namespace).stdout.split())


def blobs_on_disk(d: Daemon) -> list[str]:
    p = d.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    return sorted(os.listdir(p)) if p.exists() else []


def blobs_collected(d: Daemon, timeout: float = 10) -> list[str]:
    """The blobs left once GC (scheduled after a deletion, not inline) has had its turn."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not blobs_on_disk(d), timeout, "the blobs to be collected")
    return blobs_on_disk(d)


# -- ctr content --------------------------------------------------------------------------
def test_ctr_content_ingest_ls_get_label_rm(daemon: Daemon) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)  # several 1 MiB write messages
    dgst = sha(data)
    r = ctr_bytes(
        daemon, "content", "ingest", "--expected-size", str(len(data)), "--expected-digest", dgst, "ref-1", data=data
    )
    assert r.returncode == 0, r.stderr
    assert content_digests(daemon) == [dgst]
    got = ctr_bytes(daemon, "content", "get", dgst)
    assert got.returncode == 0, got.stderr
    assert got.stdout == data

    daemon.ctr("content", "label", dgst, "a=1", "b=2")
    ls = daemon.ctr("content", "ls").stdout
    assert "a=1" in ls
    assert "b=2" in ls
    daemon.ctr("content", "label", dgst, "a=")  # remove one label
    ls = daemon.ctr("content", "ls").stdout
    assert "a=1" not in ls
    assert "b=2" in ls
    assert daemon.ctr("content", "ls", "-q", "labels.b==2").stdout.split() == [dgst]
    assert daemon.ctr("content", "ls", "-q", "labels.b==3").stdout.split() == []

    # ingesting it again is a no-op (AlreadyExists is success for ctr)
    r = ctr_bytes(daemon, "content", "ingest", "--expected-digest", dgst, "ref-2", data=data)
    assert r.returncode == 0, r.stderr
    assert daemon.ctr("content", "active").stdout.split()[3:] == []

    daemon.ctr("content", "rm", dgst)
    assert content_digests(daemon) == []
    assert blobs_collected(daemon) == []  # no namespace and no lease holds it: bytes are gone
    r = ctr_bytes(daemon, "content", "get", dgst)
    assert r.returncode != 0
    assert b"not found" in r.stderr


def test_ctr_content_wrong_digest_is_refused(daemon: Daemon) -> None:
    data = b"some bytes that do not match"
    wrong = sha(b"other")
    r = ctr_bytes(daemon, "content", "ingest", "--expected-digest", wrong, "bad-ref", data=data)
    assert r.returncode != 0
    assert b"unexpected commit digest" in r.stderr
    assert content_digests(daemon) == []
    assert blobs_collected(daemon) == []
    # the ingest stays, as in containerd, and can be seen and aborted
    assert "bad-ref" in daemon.ctr("content", "active").stdout
    with _content_stub(daemon) as (stub, md):
        stub.Abort(cpb.AbortRequest(ref="bad-ref"), metadata=md)
    assert "bad-ref" not in daemon.ctr("content", "active").stdout


def test_ctr_content_is_namespaced(daemon: Daemon) -> None:
    data = os.urandom(4096)
    dgst = sha(data)
    assert ctr_bytes(daemon, "content", "ingest", "--expected-digest", dgst, "r", data=data).returncode == 0
    assert content_digests(daemon, "other") == []
    r = ctr_bytes(daemon, "content", "get", dgst, namespace="other")
    assert r.returncode != 0
    # the same blob in another namespace: committed without sending bytes again
    with _content_stub(daemon, namespace="other") as (stub, md):
        resps = list(
            stub.Write(
                iter(
                    [
                        cpb.WriteContentRequest(action=cpb.STAT, ref="r2", total=len(data), expected=dgst),
                        cpb.WriteContentRequest(
                            action=cpb.COMMIT, ref="r2", offset=len(data), total=len(data), expected=dgst
                        ),
                    ]
                ),
                metadata=md,
            )
        )
    assert resps[0].offset == len(data)  # nothing left to write
    assert resps[1].digest == dgst
    assert resps[1].offset == len(data)
    assert content_digests(daemon, "other") == [dgst]
    # GC runs after each deletion and collects unreferenced content: pin it in "other"
    daemon.ctr("content", "label", dgst, "containerd.io/gc.root=pinned", namespace="other")
    daemon.ctr("content", "rm", dgst)
    assert blobs_on_disk(daemon) == [dgst.split(":")[1]]  # "other" still has it
    daemon.ctr("content", "rm", dgst, namespace="other")
    assert blobs_collected(daemon) == []


# -- the Write protocol, call by call --------------------------------------------------------
Metadata = tuple[tuple[str, str | bytes], ...]


@contextlib.contextmanager
def _content_stub(
    d: Daemon, namespace: str = "default", lease: str | None = None
) -> Iterator[tuple[cpb_grpc.ContentStub, Metadata]]:
    ch = grpc.insecure_channel(f"unix:{d.address}")
    md: Metadata = (("containerd-namespace", namespace),)
    if lease:
        md += (("containerd-lease", lease),)
    try:
        yield cpb_grpc.ContentStub(ch), md
    finally:
        ch.close()


class _Stream:
    """A Write stream driven one message at a time."""

    def __init__(self, stub: cpb_grpc.ContentStub, md: Metadata) -> None:
        import queue

        self._q: queue.Queue[Any] = queue.Queue()
        self._it = iter(stub.Write(iter(self._q.get, None), metadata=md))

    def send(self, **kw: Any) -> cpb.WriteContentResponse:
        self._q.put(cpb.WriteContentRequest(**kw))
        return next(self._it)

    def close(self) -> None:
        self._q.put(None)
        with contextlib.suppress(StopIteration, grpc.RpcError):
            next(self._it)


def test_write_protocol_resume_lock_offsets(daemon: Daemon) -> None:
    data = os.urandom(2_500_000)
    dgst = sha(data)
    with _content_stub(daemon) as (stub, md):
        s1 = _Stream(stub, md)
        st = s1.send(action=cpb.STAT, ref="layer-x", total=len(data), expected=dgst)
        assert st.action == cpb.STAT
        assert st.offset == 0
        assert st.total == len(data)
        assert st.started_at.seconds > 0
        assert s1.send(action=cpb.WRITE, ref="layer-x", offset=0, data=data[:1_000_000]).offset == 1_000_000
        # a second writer on the same ref is refused while the first holds it
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Write(iter([cpb.WriteContentRequest(action=cpb.STAT, ref="layer-x")]), metadata=md))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "locked" in (e.value.details() or "")
        # a write at the wrong offset
        with pytest.raises(grpc.RpcError) as e:
            s1.send(action=cpb.WRITE, ref="layer-x", offset=5, data=b"x")
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE

        # the stream ended (error): the ingest is kept and can be resumed
        status = stub.Status(cpb.StatusRequest(ref="layer-x"), metadata=md).status
        assert status.offset == 1_000_000
        assert status.total == len(data)
        statuses = stub.ListStatuses(cpb.ListStatusesRequest(filters=["ref==layer-x"]), metadata=md).statuses
        assert [x.ref for x in statuses] == ["layer-x"]

    daemon.restart()  # the ingest survives a daemon restart; the daemon re-hashes it

    with _content_stub(daemon) as (stub, md):
        s2 = _Stream(stub, md)
        assert s2.send(action=cpb.STAT, ref="layer-x", total=len(data), expected=dgst).offset == 1_000_000
        assert s2.send(action=cpb.WRITE, ref="layer-x", offset=1_000_000, data=data[1_000_000:]).offset == len(data)
        done = s2.send(
            action=cpb.COMMIT, ref="layer-x", offset=len(data), total=len(data), expected=dgst, labels={"k": "v"}
        )
        assert done.action == cpb.COMMIT
        assert done.digest == dgst
        assert done.offset == len(data)
        s2.close()
        info = stub.Info(cpb.InfoRequest(digest=dgst), metadata=md).info
        assert info.size == len(data)
        assert dict(info.labels) == {"k": "v"}
        chunks = list(stub.Read(cpb.ReadContentRequest(digest=dgst, offset=10, size=1_500_000), metadata=md))
        assert all(len(c.data) <= 1 << 20 for c in chunks)
        assert b"".join(c.data for c in chunks) == data[10:1_500_010]
        assert chunks[1].offset == 10 + len(chunks[0].data)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Read(cpb.ReadContentRequest(digest=dgst, offset=len(data) + 1), metadata=md))
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE

        # STAT with an expected digest that is committed: ALREADY_EXISTS, which ctr skips
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Write(iter([cpb.WriteContentRequest(action=cpb.STAT, ref="again", expected=dgst)]), metadata=md))
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # a write stream without a ref
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Write(iter([cpb.WriteContentRequest(action=cpb.STAT)]), metadata=md))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.Info(cpb.InfoRequest(digest="sha256:nothex"), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.Info(cpb.InfoRequest(digest=sha(b"absent")), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- images and leases through ctr ------------------------------------------------------------
def _tar(files: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def oci_archive(layer_payload: bytes) -> tuple[bytes, str]:
    """An OCI image layout tar (one linux/amd64 manifest tagged "latest"); returns it and the manifest digest."""
    layer_tar = _tar({"payload.bin": layer_payload})
    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer), "size": len(layer)}
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {"org.opencontainers.image.ref.name": "latest"},
                }
            ],
        }
    ).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for b in (layer, config, manifest):
        files["blobs/sha256/" + sha(b)[7:]] = b
    return _tar(files), sha(manifest)


def test_ctr_images_import_ls_tag_label_rm(daemon: Daemon, tmp_path: Path) -> None:
    archive, manifest = oci_archive(os.urandom(100_000))
    (tmp_path / "img.tar").write_bytes(archive)
    daemon.ctr("images", "import", "--no-unpack", "--base-name", "example.com/t", str(tmp_path / "img.tar"))
    ls = daemon.ctr("images", "ls").stdout
    assert "example.com/t:latest" in ls
    assert manifest in ls
    assert "linux/amd64" in ls  # ctr read the manifest and config back through Content.Read
    # gc labels set by the client through Content.Update
    assert "containerd.io/gc.ref.content.config" in daemon.ctr("content", "ls").stdout
    assert daemon.ctr("leases", "ls", "-q").stdout.split() == []  # import's lease is gone

    daemon.ctr("images", "tag", "example.com/t:latest", "example.com/t:v2")
    r = daemon.ctr("images", "tag", "example.com/t:latest", "example.com/t:v2", check=False)
    assert r.returncode != 0
    assert 'image "example.com/t:v2": already exists' in r.stderr
    daemon.ctr("images", "label", "example.com/t:v2", "team=a")
    assert daemon.ctr("images", "ls", "-q", "labels.team==a").stdout.split() == ["example.com/t:v2"]
    assert daemon.ctr("images", "ls", "-q", "name~=latest").stdout.split() == ["example.com/t:latest"]
    daemon.ctr("images", "rm", "--sync", "example.com/t:v2")
    assert daemon.ctr("images", "ls", "-q").stdout.split() == ["example.com/t:latest"]
    assert daemon.ctr("images", "ls", "-q", namespace="other").stdout.split() == []


def test_ctr_leases(daemon: Daemon) -> None:
    daemon.ctr("leases", "create", "--id", "my-lease", "--expires", "1h", "team=a")
    generated = daemon.ctr("leases", "create").stdout.strip()
    assert generated
    ls = daemon.ctr("leases", "ls").stdout
    assert "my-lease" in ls
    assert "team=a" in ls
    assert "containerd.io/gc.expire=" in ls
    assert sorted(daemon.ctr("leases", "ls", "-q").stdout.split()) == sorted(["my-lease", generated])
    assert daemon.ctr("leases", "ls", "-q", "labels.team==a").stdout.split() == ["my-lease"]
    r = daemon.ctr("leases", "create", "--id", "my-lease", check=False)
    assert r.returncode != 0
    assert "already exists" in r.stderr
    daemon.ctr("leases", "rm", "--sync", "my-lease", generated)
    assert daemon.ctr("leases", "ls", "-q").stdout.split() == []
    r = daemon.ctr("leases", "rm", "my-lease", check=False)
    assert r.returncode != 0
    assert "not found" in r.stderr


# -- a real pull of content from Debian's docker-registry --------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    exe = "/usr/bin/docker-registry"
    if not os.path.exists(exe):
        pytest.skip("docker-registry is not installed")
    port = _free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(tmp_path / "registry.log", "wb") as logf:
        proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 20, "the registry to listen")
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_ctr_push_then_fetch_into_another_namespace(daemon: Daemon, registry: str, tmp_path: Path) -> None:
    archive, manifest = oci_archive(os.urandom(5_000_000))
    (tmp_path / "img.tar").write_bytes(archive)
    daemon.ctr(
        "images", "import", "--no-unpack", "--base-name", "example.com/big", str(tmp_path / "img.tar"), namespace="src"
    )
    # push reads every blob back through Content.Read
    daemon.ctr("images", "push", "--plain-http", f"{registry}/big:latest", "example.com/big:latest", namespace="src")
    # remove the source so the fetch really writes bytes
    daemon.ctr("images", "rm", "example.com/big:latest", namespace="src")
    for d in content_digests(daemon, "src"):
        daemon.ctr("content", "rm", d, namespace="src")
    assert blobs_collected(daemon) == []

    daemon.ctr("content", "fetch", "--plain-http", f"{registry}/big:latest", namespace="dst")
    digests = content_digests(daemon, "dst")
    assert manifest in digests
    assert len(digests) == 3  # manifest, config, layer
    assert len(blobs_on_disk(daemon)) == 3
    assert "containerd.io/distribution.source.127.0.0.1=big" in daemon.ctr("content", "ls", namespace="dst").stdout
    assert daemon.ctr("content", "active", namespace="dst").stdout.split()[3:] == []
    for d in digests:
        got = ctr_bytes(daemon, "content", "get", d, namespace="dst")
        assert got.returncode == 0
        assert sha(got.stdout) == d
    assert daemon.ctr("leases", "ls", "-q", namespace="dst").stdout.split() == []
