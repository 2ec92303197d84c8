"""Image archives: OCI image layout tars and Docker ``save`` tars, in both directions.

**Export** writes what ``ctr images export`` writes: an OCI image layout (``oci-layout``,
``index.json`` whose entries carry ``io.containerd.image.name`` = the full name and
``org.opencontainers.image.ref.name`` = the tag, ``blobs/<alg>/<hex>``) plus, unless
skipped, Docker's ``manifest.json`` (``Config``, ``RepoTags`` in familiar form, ``Layers``
pointing into ``blobs/``), so ``docker load`` reads it too.  Entries are sorted by name;
for an index only the manifests matching the platform are included unless all platforms
are asked for.

**Import** (``ctr images import``) reads either format.  Every regular file is ingested
into the content store while its digest is computed.  With an ``oci-layout`` the tar's
``index.json`` *is* the result; otherwise ``manifest.json`` is turned into one Docker
schema 2 manifest per entry (layers uncompressed unless ``compress_blobs``, symlinked
layers resolved, the platform taken from the config) and an OCI index naming each
``RepoTags`` entry, normalised (``busybox:latest`` → ``docker.io/library/busybox:latest``).
Tar reading and compression run in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import posixpath
import tarfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from .. import errdefs
from ..content.interfaces import Store
from ..diff.compression import DecompressingReader
from . import digest as digests
from . import mediatypes as mt
from . import reference
from .blobs import iter_read, open_writer, read_blob, write_blob
from .handlers import children
from .models import Descriptor, Index, Manifest, Platform, dumps, parse_config, parse_index
from .platforms import Matcher

OCI_LAYOUT_VERSION = "1.0.0"
CHUNK = 1 << 20
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"


def oci_ref_name(name: str) -> str:
    """The OCI ref name for an image name: its tag (``latest``), or the name when unparsable."""
    ref = reference
    try:
        r = ref.parse(name)
    except errdefs.InvalidArgument:
        return name
    return str(r.object) or name


# ============================================================================ export
@dataclass
class _Record:
    name: str
    size: int
    mode: int
    data: bytes | None = None
    digest: str = ""
    is_dir: bool = False


@dataclass
class ExportImage:
    name: str
    target: Descriptor


async def export_archive(store: Store, out: IO[bytes], images: Sequence[ExportImage], *,
                         matcher: Matcher | None = None, skip_manifest_json: bool = False,
                         skip_nondistributable: bool = False) -> None:
    """Write an OCI layout (+ Docker manifest.json) tar of ``images`` to ``out``.

    ``matcher`` None means all platforms (every manifest of an index must be present).
    """
    manifests: list[Descriptor] = []
    for img in images:
        t = img.target
        ann = dict(t.annotations)
        ann[mt.ANNOTATION_IMAGE_NAME] = img.name
        ann[mt.ANNOTATION_REF_NAME] = oci_ref_name(img.name)
        manifests.append(Descriptor(t.media_type, t.digest, t.size, ann, t.platform, list(t.urls)))

    async def read(d: Descriptor) -> bytes:
        return await read_blob(store, d)

    records: list[_Record] = [
        _Record("oci-layout", 0, 0o444, dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION})),
        _Record("index.json", 0, 0o644, dumps(Index(manifests, media_type="").to_json())),
    ]
    algorithms: set[str] = set()
    docker: dict[str, tuple[Descriptor, list[str]]] = {}
    resolved_index: dict[str, str] = {}

    async def add_tree(root: Descriptor) -> None:
        stack = [root]
        seen: set[str] = set()
        while stack:
            d = stack.pop(0)
            if d.digest in seen:
                continue
            seen.add(d.digest)
            algo, hexpart = digests.validate(d.digest)
            algorithms.add(algo)
            if not (skip_nondistributable and mt.is_nondistributable(d.media_type)):
                records.append(_Record(f"blobs/{algo}/{hexpart}", d.size, 0o444, digest=d.digest))
            if mt.is_manifest(d.media_type) or mt.is_index(d.media_type):
                stack[0:0] = children(d, await read(d))

    for desc in manifests:
        name = desc.annotations.get(mt.ANNOTATION_IMAGE_NAME, "")
        if mt.is_manifest(desc.media_type):
            if desc.digest not in docker:
                await add_tree(desc)
                docker[desc.digest] = (desc, [])
            if name:
                docker[desc.digest][1].append(name)
        elif mt.is_index(desc.media_type):
            if desc.digest not in resolved_index:
                algo, hexpart = digests.validate(desc.digest)
                records.append(_Record(f"blobs/{algo}/{hexpart}", desc.size, 0o444, digest=desc.digest))
                algorithms.add(algo)
                idx = parse_index(await read(desc), desc.media_type)
                chosen: list[Descriptor] = []
                for m in idx.manifests:
                    if matcher is not None:
                        if m.platform is None or matcher.match(m.platform):
                            chosen.append(m)
                        else:
                            continue
                    await add_tree(m)
                picked = ""
                if chosen:
                    chosen.sort(key=lambda m: (matcher.rank(m.platform) if matcher and m.platform else None)
                                or 0)
                    picked = chosen[0].digest
                    docker.setdefault(picked, (chosen[0], []))
                elif matcher is not None:
                    raise errdefs.NotFound(f"{name or desc.digest}: no manifest found for platform {matcher}")
                resolved_index[desc.digest] = picked
            picked = resolved_index[desc.digest]
            if picked and name:
                docker[picked][1].append(name)
        else:
            raise errdefs.InvalidArgument(f"only manifests may be exported, not {desc.media_type!r}")

    if not skip_manifest_json and docker:
        ref = reference
        entries = []
        for mdesc, names in docker.values():
            man = _parse_manifest_for_export(await read(mdesc), mdesc)
            ca, ch = digests.validate(man.config.digest)
            entries.append({
                "Config": f"blobs/{ca}/{ch}",
                "RepoTags": [ref.familiarize(n) for n in names] or None,
                "Layers": [f"blobs/{digests.validate(x.digest)[0]}/{digests.validate(x.digest)[1]}"
                           for x in man.layers],
            })
        records.append(_Record("manifest.json", 0, 0o644, dumps(entries)))
    if algorithms:
        records.append(_Record("blobs/", 0, 0o755, is_dir=True))
        records.extend(_Record(f"blobs/{a}/", 0, 0o755, is_dir=True) for a in algorithms)

    records.sort(key=lambda r: r.name)
    last = ""
    for rec in records:
        if rec.name == last:
            continue
        last = rec.name
        await _write_record(store, out, rec)
    await asyncio.to_thread(out.write, b"\0" * 1024)
    await asyncio.to_thread(out.flush)


def _parse_manifest_for_export(data: bytes, desc: Descriptor) -> Manifest:
    from .models import parse_manifest

    return parse_manifest(data, desc.media_type)


async def _write_record(store: Store, out: IO[bytes], rec: _Record) -> None:
    info = tarfile.TarInfo(rec.name)
    info.mode = rec.mode
    info.mtime = 0
    info.uname = info.gname = ""
    if rec.is_dir:
        info.type = tarfile.DIRTYPE
        info.size = 0
    else:
        info.type = tarfile.REGTYPE
        info.size = len(rec.data) if rec.data is not None else rec.size
    header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    await asyncio.to_thread(out.write, header)
    if rec.is_dir:
        return
    written = 0
    if rec.data is not None:
        await asyncio.to_thread(out.write, rec.data)
        written = len(rec.data)
    else:
        v = digests.Verifier(rec.digest, rec.size)
        async for chunk in iter_read(store, rec.digest):
            v.update(chunk)
            await asyncio.to_thread(out.write, chunk)
            written += len(chunk)
        v.check("blob")
    if written != info.size:
        raise errdefs.FailedPrecondition(f"unexpected copy size for {rec.name}: {written} != {info.size}")
    pad = (-written) % 512
    if pad:
        await asyncio.to_thread(out.write, b"\0" * pad)


# ============================================================================ import
@dataclass
class ImportResult:
    index: Descriptor
    blobs: dict[str, Descriptor] = field(default_factory=dict)


def _open_tar(fileobj: IO[bytes]) -> tarfile.TarFile:
    # Decompressed by our bounded reader (gzip / zstd, as containerd's import), not by
    # tarfile's "r|*", whose per-read output is unbounded for bz2 (a bomb) and which
    # knows no zstd.
    return tarfile.open(fileobj=cast("IO[bytes]", DecompressingReader(fileobj)), mode="r|")


async def _tar_members(fileobj: IO[bytes]) -> AsyncIterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    tf = await asyncio.to_thread(_open_tar, fileobj)
    try:
        while True:
            info = await asyncio.to_thread(tf.next)
            if info is None:
                return
            yield info, tf
    finally:
        await asyncio.to_thread(tf.close)


async def import_index(store: Store, fileobj: IO[bytes], *, compress_blobs: bool = False,
                       on_blob: Callable[[str, int], Awaitable[None] | None] | None = None) -> ImportResult:
    """Ingest a tar (OCI layout or Docker archive) into ``store``; returns the index descriptor."""
    oci_layout: dict[str, Any] | None = None
    docker_manifests: list[dict[str, Any]] | None = None
    symlinks: dict[str, str] = {}
    blobs: dict[str, Descriptor] = {}
    index_bytes: bytes | None = None
    try:
        async for info, tf in _tar_members(fileobj):
            name = posixpath.normpath(info.name.lstrip("/"))
            if name.startswith("./"):
                name = name[2:]
            if info.issym():
                symlinks[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
                continue
            if not info.isreg():
                continue
            f = await asyncio.to_thread(tf.extractfile, info)
            if f is None:
                continue
            if name in ("oci-layout", "manifest.json", "index.json", "repositories"):
                if info.size > (16 << 20):
                    raise errdefs.InvalidArgument(f"archive member {name} is too large ({info.size} bytes)")
                data = await asyncio.to_thread(f.read)
                if name == "oci-layout":
                    obj = _json(data, name)
                    oci_layout = obj if isinstance(obj, dict) else {}
                elif name == "manifest.json":
                    obj = _json(data, name)
                    if not isinstance(obj, list):
                        raise errdefs.InvalidArgument("archive manifest.json: expected a list")
                    docker_manifests = obj
                elif name == "index.json":
                    index_bytes = data
                if name != "index.json":
                    continue
                dgst = digests.from_bytes(data)
                await write_blob(store, f"tar-{name}", data, len(data), dgst)
                blobs[name] = Descriptor("", dgst, len(data))
                continue
            expected = _digest_from_path(name)
            dgst = await _ingest(store, f, info.size, f"tar-{name}", expected)
            blobs[name] = Descriptor("", dgst, info.size)
            if on_blob is not None:
                r = on_blob(dgst, info.size)
                if r is not None:
                    await r
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise errdefs.InvalidArgument(f"invalid image archive: {exc}") from exc

    if oci_layout is not None and oci_layout.get("imageLayoutVersion"):
        version = oci_layout.get("imageLayoutVersion")
        if version != OCI_LAYOUT_VERSION:
            raise errdefs.InvalidArgument(f"unsupported OCI layout version {version!r}")
        if index_bytes is None:
            raise errdefs.InvalidArgument(f"missing index.json in OCI layout {OCI_LAYOUT_VERSION}")
        parse_index(index_bytes)  # validate
        d = blobs["index.json"]
        return ImportResult(Descriptor(mt.OCI_INDEX, d.digest, d.size), blobs)
    if docker_manifests is None:
        raise errdefs.InvalidArgument(
            "unrecognized image format: the archive has neither oci-layout/index.json nor manifest.json")
    for name, target in symlinks.items():
        if target in blobs:
            blobs[name] = blobs[target]
    ref = reference
    entries: list[Descriptor] = []
    for entry in docker_manifests:
        if not isinstance(entry, dict):
            raise errdefs.InvalidArgument("archive manifest.json: entries must be objects")
        cfg_path = posixpath.normpath(str(entry.get("Config", "")))
        cfg = blobs.get(cfg_path)
        if cfg is None:
            raise errdefs.InvalidArgument(f"image config {cfg_path!r} not found in the archive")
        config = Descriptor(mt.DOCKER_CONFIG, cfg.digest, cfg.size)
        layers = []
        for lp in entry.get("Layers") or []:
            lp = posixpath.normpath(str(lp))
            ld = blobs.get(lp)
            if ld is None:
                raise errdefs.InvalidArgument(f"layer {lp!r} not found in the archive")
            layers.append(await _resolve_layer(store, ld, compress_blobs))
        manifest = Manifest(config, layers, media_type=mt.DOCKER_MANIFEST)
        mbytes = dumps(manifest.to_json())
        mdesc = Descriptor(mt.DOCKER_MANIFEST, digests.from_bytes(mbytes), len(mbytes))
        await write_blob(store, f"manifest-{mdesc.digest}", mbytes, mdesc.size, mdesc.digest)
        cfg_obj = parse_config(await read_blob(store, config))
        if cfg_obj.os:
            mdesc.platform = Platform(cfg_obj.os, cfg_obj.architecture, cfg_obj.variant)
        tags = entry.get("RepoTags") or []
        if not tags:
            entries.append(mdesc)
        for tag in tags:
            normalized = ref.normalize(str(tag))
            entries.append(Descriptor(mdesc.media_type, mdesc.digest, mdesc.size,
                                      {mt.ANNOTATION_IMAGE_NAME: normalized,
                                       mt.ANNOTATION_REF_NAME: oci_ref_name(normalized)},
                                      mdesc.platform))
    ibytes = dumps(Index(entries, media_type="").to_json())
    idesc = Descriptor(mt.OCI_INDEX, digests.from_bytes(ibytes), len(ibytes))
    await write_blob(store, f"manifest-{idesc.digest}", ibytes, idesc.size, idesc.digest)
    return ImportResult(idesc, blobs)


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errdefs.InvalidArgument(f"archive {what}: invalid JSON: {exc}") from None


def _digest_from_path(name: str) -> str:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs" and parts[1] in digests.ALGORITHMS:
        d = f"{parts[1]}:{parts[2]}"
        if digests.is_valid(d):
            return d
    return ""


async def _ingest(store: Store, f: IO[bytes], size: int, ref: str, expected: str) -> str:
    """Stream one tar member into the store; returns its (verified) digest."""
    algo = expected.split(":", 1)[0] if expected else digests.CANONICAL
    h = hashlib.new(algo)
    try:
        w = await open_writer(store, ref, size, expected)
    except errdefs.AlreadyExists:
        return expected
    try:
        st = await w.status()
        if st.offset:
            await w.truncate(0)
        n = 0
        while True:
            chunk = await asyncio.to_thread(f.read, CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            await w.write(chunk)
        if n != size:
            raise errdefs.InvalidArgument(f"archive member {ref[4:]}: truncated ({n} of {size} bytes)")
        dgst = f"{algo}:{h.hexdigest()}"
        if expected and dgst != expected:
            raise errdefs.FailedPrecondition(f"archive member {ref[4:]}: digest mismatch: content is {dgst}")
        try:
            await w.commit(size, dgst)
        except errdefs.AlreadyExists:
            pass
        return dgst
    except BaseException:
        await w.close()
        try:
            await store.abort(ref)
        except errdefs.ContainerdError:
            pass
        raise
    finally:
        await w.close()


async def _resolve_layer(store: Store, ld: Descriptor, compress: bool) -> Descriptor:
    head = b""
    async for chunk in iter_read(store, ld.digest, 0, 8):
        head += chunk
        if len(head) >= 8:
            break
    if head[:2] == b"\x1f\x8b":
        return Descriptor(mt.DOCKER_LAYER_GZIP, ld.digest, ld.size)
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return Descriptor(mt.DOCKER_LAYER_ZSTD, ld.digest, ld.size)
    if not compress:
        return Descriptor(mt.DOCKER_LAYER, ld.digest, ld.size)
    for info in await store.list([f'labels."{UNCOMPRESSED_LABEL}"=={ld.digest}']):
        return Descriptor(mt.DOCKER_LAYER_GZIP, info.digest, info.size)
    return await _gzip_blob(store, ld)


async def _gzip_blob(store: Store, ld: Descriptor) -> Descriptor:
    from isal import isal_zlib

    comp = isal_zlib.compressobj(2, isal_zlib.DEFLATED, 16 + 15)
    parts: list[bytes] = []
    async for chunk in iter_read(store, ld.digest):
        parts.append(await asyncio.to_thread(comp.compress, chunk))
    parts.append(comp.flush())
    data = b"".join(parts)
    d = Descriptor(mt.DOCKER_LAYER_GZIP, digests.from_bytes(data), len(data))
    await write_blob(store, f"compress-blob-{ld.digest.replace(':', '-')}", data, d.size, d.digest,
                     {UNCOMPRESSED_LABEL: ld.digest})
    return d
