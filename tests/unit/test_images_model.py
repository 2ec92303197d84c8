"""Image models, platforms, GC labels and chain ids (pure)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from pycontainerd import errdefs
from pycontainerd.images import handlers, models, platforms
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.models import Descriptor, Platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def test_chain_ids() -> None:
    assert handlers.chain_ids([D1]) == [D1]
    c2 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {D3}".encode()).hexdigest()
    assert handlers.chain_ids([D1, D2, D3]) == [D1, c2, c3]
    assert handlers.chain_id([D1, D2, D3]) == c3


def test_child_gc_labels() -> None:
    kids = [Descriptor(mt.OCI_CONFIG, D1, 1), Descriptor(mt.OCI_LAYER_GZIP, D2, 2),
            Descriptor(mt.DOCKER_LAYER_GZIP, D3, 3)]
    assert handlers.child_gc_labels(kids) == {
        "containerd.io/gc.ref.content.config": D1,
        "containerd.io/gc.ref.content.l.0": D2,
        "containerd.io/gc.ref.content.l.1": D3,
    }
    ms = [Descriptor(mt.OCI_MANIFEST, D1, 1), Descriptor(mt.DOCKER_MANIFEST, D2, 1), Descriptor("x/y", D3, 1)]
    assert handlers.child_gc_labels(ms) == {
        "containerd.io/gc.ref.content.m.0": D1, "containerd.io/gc.ref.content.m.1": D2,
        "containerd.io/gc.ref.content.0": D3}


def _manifest(**over: object) -> bytes:
    obj: dict[str, object] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                              "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
                              "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20}]}
    obj.update(over)
    return json.dumps(obj).encode()


def test_parse_manifest_and_children() -> None:
    m = models.parse_manifest(_manifest(), mt.OCI_MANIFEST)
    assert m.config.digest == D1
    assert [x.digest for x in m.layers] == [D2]
    kids = handlers.children(Descriptor(mt.OCI_MANIFEST, D3, 1), _manifest())
    assert [k.digest for k in kids] == [D1, D2]


@pytest.mark.parametrize(("data", "msg"), [
    (b"not json", "not valid JSON"),
    (b"[]", "expected a JSON object"),
    (_manifest(schemaVersion=1), "schema 1"),
    (_manifest(config={"digest": "sha256:xyz", "size": 1}), "invalid"),
    (_manifest(layers=[{"digest": D2, "size": -1}]), "non-negative"),
    (_manifest(mediaType=mt.OCI_INDEX), "does not match"),
    (b" " * (models.MAX_MANIFEST_SIZE + 1), "too large"),
])
def test_malformed_manifest(data: bytes, msg: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=msg):
        models.parse_manifest(data, mt.OCI_MANIFEST)


def test_descriptor_json_roundtrip() -> None:
    d = Descriptor(mt.OCI_MANIFEST, D1, 5, {"a": "b"}, Platform("linux", "arm", "v7"))
    assert models.Descriptor.from_json(d.to_json()) == d
    assert list(d.to_json()) == ["mediaType", "digest", "size", "annotations", "platform"]


@pytest.mark.parametrize(("spec", "want"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/armhf", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("amd64", Platform("linux", "amd64")),
    ("windows/amd64", Platform("windows", "amd64")),
])
def test_platform_parse(spec: str, want: Platform) -> None:
    assert platforms.parse(spec) == want


@pytest.mark.parametrize("bad", ["", "linux/", "foo/amd64", "linux/nonsense", "a/b/c/d", "linux/amd 64"])
def test_platform_parse_invalid(bad: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        platforms.parse(bad)


def test_platform_matching() -> None:
    arm64 = platforms.only(Platform("linux", "arm64"))
    assert arm64.match(Platform("linux", "arm64", "v8"))
    assert arm64.match(Platform("linux", "arm", "v7"))
    assert arm64.rank(Platform("linux", "arm64")) == 0
    assert (arm64.rank(Platform("linux", "arm", "v7")) or 0) > 0
    assert not arm64.match(Platform("linux", "amd64"))
    v7 = platforms.only(Platform("linux", "arm", "v7"))
    assert v7.match(Platform("linux", "arm", "v6"))
    assert not v7.match(Platform("linux", "arm", "v8"))
    amd = platforms.only(Platform("linux", "amd64"))
    assert amd.match(Platform("linux", "x86_64"))
    assert not amd.match(Platform("windows", "amd64"))
    assert platforms.all_platforms().match(Platform("plan9", "386"))
    assert platforms.matcher_for([], False).match(platforms.host())


def test_filter_platforms_keeps_best_one() -> None:
    index = Descriptor(mt.OCI_INDEX, D3, 1)
    kids = [Descriptor(mt.OCI_MANIFEST, D1, 1, platform=Platform("linux", "arm", "v7")),
            Descriptor(mt.OCI_MANIFEST, D2, 1, platform=Platform("linux", "arm64")),
            Descriptor(mt.OCI_MANIFEST, D3, 1, platform=Platform("linux", "amd64"))]
    got = handlers.filter_platforms(index, kids, platforms.only(Platform("linux", "arm64")))
    assert [d.digest for d in got] == [D2]
    got = handlers.filter_platforms(index, kids, platforms.all_platforms())
    assert len(got) == 3


def test_resolve_manifest_through_index() -> None:
    asyncio.run(_resolve_manifest_through_index())


async def _resolve_manifest_through_index() -> None:
    cfg = json.dumps({"os": "linux", "architecture": "arm64", "rootfs": {"type": "layers", "diff_ids": [D1]}}).encode()
    cfg_d = Descriptor(mt.OCI_CONFIG, "sha256:" + hashlib.sha256(cfg).hexdigest(), len(cfg))
    man = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cfg_d.to_json(),
                      "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 3}]}).encode()
    man_d = Descriptor(mt.OCI_MANIFEST, "sha256:" + hashlib.sha256(man).hexdigest(), len(man),
                       platform=Platform("linux", "arm64"))
    other = Descriptor(mt.OCI_MANIFEST, D3, 9, platform=Platform("linux", "amd64"))
    idx = json.dumps({"schemaVersion": 2, "manifests": [other.to_json(), man_d.to_json()]}).encode()
    idx_d = Descriptor(mt.OCI_INDEX, "sha256:" + hashlib.sha256(idx).hexdigest(), len(idx))
    blobs = {idx_d.digest: idx, man_d.digest: man, cfg_d.digest: cfg}

    async def read(d: Descriptor) -> bytes:
        if d.digest not in blobs:
            raise errdefs.NotFound(d.digest)
        return blobs[d.digest]

    r = await handlers.resolve_manifest(read, idx_d, platforms.only(Platform("linux", "arm64")))
    assert r.manifest_desc.digest == man_d.digest
    assert r.chain_id == D1
    with pytest.raises(errdefs.NotFound, match="no match for platform"):
        await handlers.resolve_manifest(read, idx_d, platforms.only(Platform("linux", "s390x")))
    assert await handlers.platforms_of(read, idx_d) == [Platform("linux", "amd64"), Platform("linux", "arm64")]
