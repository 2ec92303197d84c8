"""A pathological filter regex must not freeze the daemon (issue 13, findings 5 and 8).

``Images.List(filters=['name~=/(a+)+$/'])`` over an image named with 29 ``a`` and a ``!`` made
Python's backtracking ``re`` run for 36 s while holding the GIL: every other request (even
``ctr version``) waited.  containerd (Go, RE2) answers at once, and so must we.

The evil List runs over and over in a thread for as long as a concurrent ``ctr version`` is
in flight, so the two always overlap.  With a backtracking engine the first List alone takes
minutes: the List's gRPC deadline and ``ctr version``'s timeout then fail the test (they are
hang guards, not performance assertions).

Also over gRPC: a deeply nested filter regexp and a digest with a trailing newline are
INVALID_ARGUMENT with a message (they were UNKNOWN with a traceback / accepted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator

import grpc
import pytest

from pycontainerd.api.services.content.v1 import content_pb2 as ctpb
from pycontainerd.api.services.content.v1 import content_pb2_grpc as ctpb_grpc
from pycontainerd.api.services.images.v1 import images_pb2 as ipb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as ipb_grpc
from pycontainerd.api.types import descriptor_pb2
from tests.integration.daemon import CTR, Daemon, running_daemon

pytestmark = pytest.mark.root

NS = "redos"
MD = (("containerd-namespace", NS),)
EVIL_NAME = "a" * 29 + "!"
EVIL_FILTER = "name~=/(a+)+$/"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "1" * 64
HANG_GUARD = 60  # seconds; a backtracking engine needs minutes for the first evil List


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runs a real daemon)")
    if not shutil.which(CTR):
        pytest.skip("the real ctr (Debian package containerd) is not installed")
    with running_daemon() as d:
        yield d


@pytest.fixture(scope="module")
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(f"unix://{daemon.address}")
    try:
        images = ipb_grpc.ImagesStub(ch)
        for name in (EVIL_NAME, "a" * 29):
            target = descriptor_pb2.Descriptor(media_type=MANIFEST, digest=DIGEST, size=100)
            images.Create(ipb.CreateImageRequest(image=ipb.Image(name=name, target=target)), metadata=MD,
                          timeout=HANG_GUARD)
        yield ch
    finally:
        ch.close()


def list_names(ch: grpc.Channel, *filters: str) -> list[str]:
    resp = ipb_grpc.ImagesStub(ch).List(ipb.ListImagesRequest(filters=list(filters)), metadata=MD,
                                        timeout=HANG_GUARD)
    return sorted(i.name for i in resp.images)


def test_evil_filter_answers_and_does_not_block_other_requests(daemon: Daemon, channel: grpc.Channel) -> None:
    version_done = threading.Event()
    answers: list[list[str]] = []
    errors: list[BaseException] = []

    def evil_lists() -> None:
        try:
            while True:  # at least once, and until ctr version has answered
                answers.append(list_names(channel, EVIL_FILTER))
                if version_done.is_set():
                    return
        except BaseException as exc:
            errors.append(exc)

    lister = threading.Thread(target=evil_lists, daemon=True)
    lister.start()
    try:
        r = subprocess.run([CTR, "-a", daemon.address, "version"], capture_output=True, text=True,
                           timeout=HANG_GUARD)
    finally:
        version_done.set()
        lister.join(HANG_GUARD * 2)
    assert r.returncode == 0, r.stderr
    assert "Server:" in r.stdout
    assert not lister.is_alive(), "the evil List never answered"
    assert not errors, errors
    assert answers
    # "(a+)+$" matches the name of a's only, not the one ending in "!"
    assert all(a == ["a" * 29] for a in answers), answers[:3]
    assert list_names(channel, "name~=/^(a+)+$/") == ["a" * 29]
    assert list_names(channel, "name~=/(a+)+!$/") == [EVIL_NAME]


def test_evil_filter_through_ctr(daemon: Daemon, channel: grpc.Channel) -> None:
    r = daemon.ctr("images", "ls", "-q", EVIL_FILTER, namespace=NS, timeout=HANG_GUARD)
    assert r.stdout.split() == ["a" * 29]
    r = daemon.ctr("images", "ls", "-q", "name~=/a!$/", namespace=NS, timeout=HANG_GUARD)
    assert r.stdout.split() == [EVIL_NAME]


def test_deeply_nested_filter_regexp_is_invalid_argument(channel: grpc.Channel) -> None:
    deep = "(" * 50_000 + ")" * 50_000
    with pytest.raises(grpc.RpcError) as exc:
        list_names(channel, f"name~=/{deep}/")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nests too deeply" in (exc.value.details() or "")


def test_unsupported_regexp_syntax_is_invalid_argument(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        list_names(channel, "name~=/(a)\\\\1/")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "backreferences" in (exc.value.details() or "")


def test_digest_with_trailing_newline_is_invalid_argument(channel: grpc.Channel) -> None:
    content = ctpb_grpc.ContentStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        content.Info(ctpb.InfoRequest(digest=DIGEST), metadata=MD, timeout=HANG_GUARD)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND  # well-formed, absent
    with pytest.raises(grpc.RpcError) as exc:
        content.Info(ctpb.InfoRequest(digest=DIGEST + "\n"), metadata=MD, timeout=HANG_GUARD)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "digest" in (exc.value.details() or "")
