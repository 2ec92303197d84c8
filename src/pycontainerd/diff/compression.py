"""Layer compression: detect gzip / zstd / none from the first bytes, stream-decompress, compress.

gzip goes through ISA-L (``isal``), several times faster than zlib and releasing the GIL
while it works; zstd through ``zstandard``.  Decompressors are incremental
(``decompress(chunk) -> bytes`` then ``finish()``) so the apply pipeline can feed them
whatever chunk sizes the content store yields.  Multi-member gzip and multi-frame zstd
streams are read to the end, as Go's readers do.
"""

from __future__ import annotations

import enum
from typing import Protocol, cast

import zstandard
from isal import isal_zlib

from .. import errdefs

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


_GZIP_ERROR = cast("type[BaseException]", isal_zlib.error)


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect(head: bytes) -> Compression:
    """The compression of a stream from its first bytes (at least 4 for a sure answer)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def from_media_type(media_type: str) -> Compression | None:
    """What the media type says (None when it says nothing: then detect)."""
    mt = media_type.split(";")[0].strip()
    if mt.endswith(("+gzip", ".tar.gzip")):
        return Compression.GZIP
    if mt.endswith("+zstd"):
        return Compression.ZSTD
    if mt.endswith((".tar", ".layer.v1.tar")):
        return Compression.NONE
    return None


class Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """Whatever is left; raises InvalidArgument on a truncated stream."""
        ...


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Gzip:
    """Multi-member gzip: a new member may start right after the previous one ends."""

    def __init__(self) -> None:
        self._d = isal_zlib.decompressobj(wbits=31)
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            try:
                out.append(self._d.decompress(data))
            except _GZIP_ERROR as exc:
                raise errdefs.InvalidArgument(f"corrupt gzip stream: {exc}") from exc
            self._started = True
            if not self._d.eof:
                break
            data = self._d.unused_data
            # trailing zero padding after the last member is tolerated (as gzip(1) does)
            if data and not data.startswith(b"\x1f\x8b"):
                if data.strip(b"\x00"):
                    raise errdefs.InvalidArgument("trailing garbage after gzip stream")
                data = b""
            if data:
                self._d = isal_zlib.decompressobj(wbits=31)
                self._started = False
        return b"".join(out)

    def finish(self) -> bytes:
        tail = self._d.flush()
        if self._started and not self._d.eof:
            raise errdefs.InvalidArgument("unexpected end of gzip stream (truncated layer)")
        return tail


class _Zstd:
    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        self._seen = False

    def decompress(self, data: bytes) -> bytes:
        try:
            out: bytes = self._d.decompress(data)
        except zstandard.ZstdError as exc:
            raise errdefs.InvalidArgument(f"corrupt zstd stream: {exc}") from exc
        self._seen = self._seen or bool(data)
        return out

    def finish(self) -> bytes:
        return b""


def decompressor(kind: Compression) -> Decompressor:
    if kind is Compression.GZIP:
        return _Gzip()
    if kind is Compression.ZSTD:
        return _Zstd()
    return _Identity()


class GzipCompressor:
    """Incremental gzip (ISA-L level 1 by default: close to gzip -6 in size, much faster)."""

    def __init__(self, level: int = 1) -> None:
        self._c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.compress(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())
