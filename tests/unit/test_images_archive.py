"""Image archives: OCI layout export/import and Docker archive import, against the real local content store."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.content.local import LocalStore
from pycontainerd.images import archive, blobs, handlers, platforms
from pycontainerd.images import mediatypes as mt
from pycontainerd.images.models import Descriptor, Platform, dumps, parse_index, parse_manifest


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _layer_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _put(store: LocalStore, data: bytes, media_type: str) -> Descriptor:
    d = Descriptor(media_type, _sha(data), len(data))
    await blobs.write_blob(store, f"t-{d.digest}", data, d.size, d.digest)
    return d


async def _make_image(store: LocalStore) -> tuple[Descriptor, bytes]:
    raw = _layer_tar("hello.txt", b"hello\n")
    layer = gzip.compress(raw, mtime=0)
    ld = await _put(store, layer, mt.OCI_LAYER_GZIP)
    cfg = dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [_sha(raw)]},
                 "config": {"Cmd": ["sh"]}})
    cd = await _put(store, cfg, mt.OCI_CONFIG)
    man = dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cd.to_json(), "layers": [ld.to_json()]})
    return await _put(store, man, mt.OCI_MANIFEST), raw


def test_export_then_import_roundtrip(tmp_path: Path) -> None:
    async def main() -> None:
        src = LocalStore(tmp_path / "src", labels=True)
        md, _ = await _make_image(src)
        out = io.BytesIO()
        await archive.export_archive(src, out, [archive.ExportImage("docker.io/library/hello:v1", md)],
                                     matcher=platforms.only(Platform("linux", "amd64")))
        out.seek(0)
        with tarfile.open(fileobj=out) as tf:
            names = tf.getnames()
            assert names == sorted(names)
            assert {"oci-layout", "index.json", "manifest.json", "blobs", "blobs/sha256"} <= set(names)
            idx = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
            assert idx["manifests"][0]["annotations"] == {
                "io.containerd.image.name": "docker.io/library/hello:v1", "org.opencontainers.image.ref.name": "v1"}
            dm = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
            assert dm[0]["RepoTags"] == ["hello:v1"]
        out.seek(0)
        dst = LocalStore(tmp_path / "dst", labels=True)
        res = await archive.import_index(dst, out)
        index = parse_index(await blobs.read_blob(dst, res.index))
        assert [m.digest for m in index.manifests] == [md.digest]
        for d in await handlers.walk(lambda x: blobs.read_blob(dst, x), md):
            await dst.info(d.digest)

    asyncio.run(main())


def _docker_archive(tmp_path: Path, *, symlink: bool) -> tuple[Path, bytes, bytes]:
    raw = _layer_tar("a", b"a\n")
    cfg = dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [_sha(raw)]}})
    cfg_name = _sha(cfg)[7:] + ".json"
    files: dict[str, bytes] = {cfg_name: cfg, "abc/layer.tar": raw, "abc/VERSION": b"1.0",
                               "manifest.json": dumps([{"Config": cfg_name, "RepoTags": ["busybox:latest"],
                                                        "Layers": ["link/layer.tar" if symlink else "abc/layer.tar"]}]),
                               "repositories": b"{}"}
    p = tmp_path / "docker.tar"
    with tarfile.open(p, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("link/layer.tar")
            info.type = tarfile.SYMTYPE
            info.linkname = "../abc/layer.tar"
            tf.addfile(info)
    return p, raw, cfg


@pytest.mark.parametrize("symlink", [False, True])
@pytest.mark.parametrize("compress", [False, True])
def test_docker_archive_import(tmp_path: Path, symlink: bool, compress: bool) -> None:
    async def main() -> None:
        path, raw, cfg = _docker_archive(tmp_path, symlink=symlink)
        store = LocalStore(tmp_path / "store", labels=True)
        with open(path, "rb") as f:
            res = await archive.import_index(store, f, compress_blobs=compress)
        index = parse_index(await blobs.read_blob(store, res.index))
        (m,) = index.manifests
        assert m.annotations[mt.ANNOTATION_IMAGE_NAME] == "docker.io/library/busybox:latest"
        assert m.annotations[mt.ANNOTATION_REF_NAME] == "latest"
        assert m.platform == Platform("linux", "amd64")
        man = parse_manifest(await blobs.read_blob(store, m), m.media_type)
        assert man.config.digest == _sha(cfg)
        assert man.config.media_type == mt.DOCKER_CONFIG
        (layer,) = man.layers
        if compress:
            assert layer.media_type == mt.DOCKER_LAYER_GZIP
            assert (await store.info(layer.digest)).labels[archive.UNCOMPRESSED_LABEL] == _sha(raw)
        else:
            assert layer.media_type == mt.DOCKER_LAYER
            assert layer.digest == _sha(raw)

    asyncio.run(main())


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None])
def test_unrecognized_archive(tmp_path: Path, content: bytes | None) -> None:
    async def main() -> None:
        store = LocalStore(tmp_path / "s", labels=True)
        if content is None:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                info = tarfile.TarInfo("random.txt")
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
            data = buf.getvalue()
        else:
            data = content
        with pytest.raises(errdefs.InvalidArgument):
            await archive.import_index(store, io.BytesIO(data))

    asyncio.run(main())


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_archive_import(tmp_path: Path, compression: str) -> None:
    """A gzip- or zstd-compressed archive imports (as ctr's DecompressStream reads both)."""
    import zstandard

    async def main() -> None:
        src = LocalStore(tmp_path / "src", labels=True)
        md, _ = await _make_image(src)
        out = io.BytesIO()
        await archive.export_archive(src, out, [archive.ExportImage("docker.io/library/hello:v1", md)],
                                     matcher=platforms.only(Platform("linux", "amd64")))
        raw = out.getvalue()
        packed = gzip.compress(raw) if compression == "gzip" else zstandard.ZstdCompressor().compress(raw)
        dst = LocalStore(tmp_path / "dst", labels=True)
        res = await archive.import_index(dst, io.BytesIO(packed))
        index = parse_index(await blobs.read_blob(dst, res.index))
        assert [m.digest for m in index.manifests] == [md.digest]

    asyncio.run(main())


def test_corrupt_compressed_archive_is_invalid_argument(tmp_path: Path) -> None:
    async def main() -> None:
        dst = LocalStore(tmp_path / "dst", labels=True)
        with pytest.raises(errdefs.InvalidArgument):
            await archive.import_index(dst, io.BytesIO(gzip.compress(b"x" * 100_000)[:-20]))

    asyncio.run(main())
