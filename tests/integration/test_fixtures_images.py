"""The image builders produce valid, deterministic OCI content (checked without any daemon)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from tests.fixtures import images as I


def _tar_of(layout: I.OCILayout, desc: I.Descriptor) -> bytes:
    blob = layout.read_blob(desc.digest)
    if desc.media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if desc.media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def _names(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {ti.name.rstrip("/"): ti for ti in tf.getmembers()}


def _member_names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return [ti.name for ti in tf.getmembers()]


def _check_layout(img: I.BuiltImage) -> None:
    """Every blob reachable from the target exists with the right size and digest."""
    for desc in img.blobs():
        data = img.layout.read_blob(desc.digest)
        assert len(data) == desc.size, desc
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc.digest
    man = img.layout.read_json(img.manifest.digest)
    cfg = img.layout.read_json(man["config"]["digest"])
    assert cfg["rootfs"]["diff_ids"] == img.diff_ids
    for layer, diff_id in zip(man["layers"], img.diff_ids, strict=True):
        tar = _tar_of(img.layout, I.Descriptor.from_dict(layer))
        assert I.sha256_digest(tar) == diff_id
    index = img.layout.index()
    assert any(m["digest"] == img.target.digest for m in index["manifests"])
    assert json.loads((img.path / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"


def test_busybox_image_is_fast_deterministic_and_complete(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    a = I.build_busybox_image(tmp_path / "a")
    first = time.perf_counter() - t0
    b = I.build_busybox_image(tmp_path / "b")
    assert first < 1.0
    assert a.manifest.digest == b.manifest.digest
    _check_layout(a)
    cfg = a.layout.read_json(a.config.digest)
    assert cfg["config"]["Cmd"] == ["sh"]
    assert cfg["config"]["Env"] == [f"PATH={I.DEFAULT_PATH}"]
    assert cfg["os"] == "linux"
    assert cfg["architecture"] == I.host_platform()["architecture"]
    names = _names(_tar_of(a.layout, a.layers[0]))
    assert names["bin/busybox"].isfile()
    assert names["bin/busybox"].mode == 0o755
    for applet in ("sh", "ls", "cat", "echo", "true", "sleep", "id", "ps", "top", "env", "wc", "head"):
        hits = [n for n in names if n.endswith("/" + applet) and names[n].issym()]
        assert hits, f"applet {applet} missing"
    assert names["tmp"].isdir()
    assert names["tmp"].mode == 0o1777
    assert names["root"].mode == 0o700
    passwd = _tar_of(a.layout, a.layers[0])
    assert b"nobody:x:65534" in passwd


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("style", ["oci", "docker"])
def test_compression_and_media_type_variants(tmp_path: Path, compression: I.Compression,
                                             style: I.MediaStyle) -> None:
    img = I.build_busybox_image(tmp_path / "img", compression=compression, style=style)
    _check_layout(img)
    assert img.layers[0].media_type == I.layer_media_type(compression, style)
    if style == "docker":
        assert img.manifest.media_type == I.MT_DOCKER_MANIFEST
        assert img.config.media_type == I.MT_DOCKER_CONFIG


def test_multilayer_image_has_whiteouts_and_opaque_dir(tmp_path: Path) -> None:
    img = I.build_multilayer_image(tmp_path / "ml")
    _check_layout(img)
    assert len(img.layers) == 4
    second = _names(_tar_of(img.layout, img.layers[2]))
    assert "data/.wh.a.txt" in second
    assert "data/.wh.removeddir" in second
    assert "opt/gone/.wh..wh..opq" in second
    assert second["data/hl-dst"].islnk()
    assert len(set(img.chain_ids)) == 4


def test_multiplatform_index(tmp_path: Path) -> None:
    img = I.build_multiplatform_image(tmp_path / "mp")
    _check_layout(img)
    assert img.target.media_type == I.MT_OCI_INDEX
    index = img.layout.read_json(img.target.digest)
    plats = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert ("linux", I.host_platform()["architecture"]) in plats
    assert ("linux", "arm64") in plats or I.host_platform()["architecture"] == "arm64"
    for m in index["manifests"]:  # the fake platforms are valid images too
        man = img.layout.read_json(m["digest"])
        cfg = img.layout.read_json(man["config"]["digest"])
        assert cfg["architecture"] == m["platform"]["architecture"]


def test_fifty_layers(tmp_path: Path) -> None:
    img = I.build_many_layers_image(tmp_path / "l50")
    _check_layout(img)
    assert len(img.layers) == 50


def test_malicious_layers_are_written_verbatim(tmp_path: Path) -> None:
    sentinel = tmp_path / "outside"
    layers = {m.name: m for m in I.malicious_layers(sentinel)}
    names = _member_names(layers["absolute-path"].tar)
    assert names == [f"{sentinel}/absolute"]
    trav = _member_names(layers["path-traversal"].tar)
    assert trav[1].startswith("../../")
    assert trav[1].endswith("outside/traversal")
    with tarfile.open(fileobj=io.BytesIO(layers["hardlink-outside-abs"].tar)) as tf:
        hl = tf.getmembers()[0]
    assert hl.islnk()
    assert hl.linkname == f"{sentinel}/victim"
    img = I.build_malicious_image(tmp_path / "evil", layers["symlink-escape-abs"])
    _check_layout(img)
    I.prepare_sentinel(sentinel)
    assert I.sentinel_intact(sentinel) == []
    (sentinel / "extra").write_text("x")
    assert I.sentinel_intact(sentinel)


def test_export_archive_layout(tmp_path: Path) -> None:
    bb = I.build_busybox_image(tmp_path / "bb")
    mp = I.build_multiplatform_image(tmp_path / "mp")
    tar = I.export_archive([bb, mp], tmp_path / "x.tar")
    with tarfile.open(tar) as tf:
        names = set(tf.getnames())
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    for b in [*bb.blobs(), *mp.blobs()]:
        assert f"blobs/sha256/{b.hex}" in names
    refs = {m["annotations"][I.ANNOTATION_IMAGE_NAME] for m in index["manifests"]}
    assert refs == {bb.name, mp.name}
    assert docker[0]["RepoTags"] == ["busybox:latest"]


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert I.chain_ids([a]) == [a]
    assert I.chain_ids([a, b])[1] == I.sha256_digest(f"{a} {b}".encode())
