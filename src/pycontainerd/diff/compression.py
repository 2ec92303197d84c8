"""Layer compression: detect gzip / zstd / none from the first bytes, stream-decompress, compress.

gzip goes through ISA-L (``isal``), several times faster than zlib and releasing the GIL
while it works; zstd through ``zstandard``.  A decompressor pulls compressed chunks of any
size from an iterable and yields the uncompressed stream in pieces of at most
``MAX_PIECE`` bytes, so memory stays bounded whatever the compression ratio (a layer is
untrusted: a 131 KiB zstd blob can expand to 4 GiB of zeros).  Multi-member gzip and
multi-frame zstd streams are read to the end, as Go's readers do.

Both libraries are imported by the first (de)compressor made, not with this module: the
media types and ``detect`` are all an idle daemon needs, and the two cost ~0.8 MiB resident.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import IO, Protocol, cast

from .. import errdefs

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


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


# Largest piece of uncompressed output one decompression step may produce.  A layer's
# compression ratio is chosen by whoever built it (4 GiB of zeros is 131 KiB of zstd), so
# output is bounded per step, never per input chunk: memory stays flat whatever the ratio.
MAX_PIECE = 1 << 20

# Compressed bytes handed to a decoder per step.
_GZIP_FEED = 256 << 10
_ZSTD_READ = 128 << 10


class Decompressor(Protocol):
    def __iter__(self) -> Iterator[bytes]:
        """The uncompressed stream in pieces of at most ``max_piece`` bytes (uncompressed
        input passes through in the chunks it came in).  Raises InvalidArgument on a corrupt
        or truncated stream, or trailing garbage."""
        ...


def decompressor(kind: Compression, chunks: Iterable[bytes], *, max_piece: int = MAX_PIECE) -> Decompressor:
    """A bounded decompressor over the compressed ``chunks`` (any sizes, b"" ignored)."""
    if max_piece <= 0:
        raise ValueError("max_piece must be positive")
    if kind is Compression.GZIP:
        return _Gzip(chunks, max_piece)
    if kind is Compression.ZSTD:
        return _Zstd(chunks, max_piece)
    return _Identity(chunks)


class _Identity:
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if chunk:
                yield chunk


class _Gzip:
    """Multi-member gzip: a new member may start right after the previous one ends.

    Each ``decompress`` call is capped at ``max_piece`` bytes of output; the input it did
    not take comes back as ``unconsumed_tail``.  A full piece means the decoder may still
    hold output, so it is asked again (with no new input) before the next input is fed.
    """

    def __init__(self, chunks: Iterable[bytes], max_piece: int) -> None:
        from isal import isal_zlib

        self._zlib = isal_zlib
        self._error = cast("type[BaseException]", isal_zlib.error)
        self._chunks = chunks
        self._max = max_piece
        self._d = isal_zlib.decompressobj(wbits=31)
        self._started = False
        self._carry = b""  # a next member's first magic byte, cut off by a chunk boundary

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            # at most _GZIP_FEED bytes per step: the decoder copies what it did not take
            # into ``unconsumed_tail`` after every bounded step
            view = memoryview(chunk)
            for off in range(0, len(view), _GZIP_FEED):
                yield from self._feed(view[off : off + _GZIP_FEED])
        if self._carry:
            raise errdefs.InvalidArgument("trailing garbage after gzip stream")
        if self._started and not self._d.eof:
            raise errdefs.InvalidArgument("unexpected end of gzip stream (truncated layer)")

    def _feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        limit = self._max
        if self._carry:
            data, self._carry = self._carry + bytes(data), b""
        more = bool(data)
        while more:
            d = self._d
            try:
                out = d.decompress(data, limit)
            except self._error as exc:
                raise errdefs.InvalidArgument(f"corrupt gzip stream: {exc}") from exc
            self._started = True
            if out:
                yield out
            if not d.eof:
                data = d.unconsumed_tail
                more = bool(data) or len(out) == limit
                continue
            data = d.unused_data
            if data == b"\x1f":
                self._carry, data = data, b""
                self._d = self._zlib.decompressobj(wbits=31)
                self._started = False
            # trailing zero padding after the last member is tolerated (as gzip(1) does)
            if data and not data.startswith(b"\x1f\x8b"):
                if data.strip(b"\x00"):
                    raise errdefs.InvalidArgument("trailing garbage after gzip stream")
                data = b""
            if data:
                self._d = self._zlib.decompressobj(wbits=31)
                self._started = False
            more = bool(data)


class _ChunkReader:
    """``read(n)`` over an iterable of chunks, for a decoder that pulls its input."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            chunk = next(self._it, None)
            if chunk is None:
                return b""
            self._buf, self._pos = chunk, 0
        if self._pos == 0 and (n < 0 or n >= len(self._buf)):
            out = self._buf
        else:
            end = len(self._buf) if n < 0 else self._pos + n
            out = self._buf[self._pos : end]
        self._pos += len(out)
        return out


class _Zstd:
    """Multi-frame zstd through ``stream_reader``, whose ``read(n)`` is bounded (zstandard's
    ``decompressobj`` returns everything an input chunk expands to)."""

    def __init__(self, chunks: Iterable[bytes], max_piece: int) -> None:
        self._chunks = chunks
        self._max = max_piece

    def __iter__(self) -> Iterator[bytes]:
        import zstandard

        src = _ChunkReader(self._chunks)
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", src), read_size=_ZSTD_READ, read_across_frames=True, closefd=False
        )
        with reader:
            while True:
                try:
                    out = reader.read(self._max)
                except zstandard.ZstdError as exc:
                    raise errdefs.InvalidArgument(f"corrupt zstd stream: {exc}") from exc
                if not out:
                    return
                yield out


class DecompressingReader:
    """``read(n)`` of a binary stream decompressed on the fly (gzip or zstd detected from
    its first bytes, anything else passed through), for readers such as ``tarfile``'s
    stream mode.  Memory stays bounded: at most one ``MAX_PIECE`` piece is buffered.
    Blocking (run it in a worker thread)."""

    def __init__(self, fileobj: IO[bytes], *, read_size: int = 256 << 10) -> None:
        self._f = fileobj
        self._read_size = read_size
        head = b""
        while len(head) < 4:
            more = fileobj.read(4 - len(head))
            if not more:
                break
            head += more
        self.compression = detect(head)
        self._head = head
        self._pieces: Iterator[bytes] | None = None
        if self.compression is not Compression.NONE:
            self._pieces = iter(decompressor(self.compression, self._chunks()))
        self._buf = b""
        self._pos = 0

    def _chunks(self) -> Iterator[bytes]:
        yield self._head
        self._head = b""
        while chunk := self._f.read(self._read_size):
            yield chunk

    def read(self, n: int = -1) -> bytes:
        if self._pieces is None:  # uncompressed: the head, then the file as it is
            if self._head:
                if n < 0:
                    out = self._head + self._f.read()
                    self._head = b""
                    return out
                out, self._head = self._head[:n], self._head[n:]
                return out
            return self._f.read(n)
        if n < 0:
            return b"".join([self._take(len(self._buf)), *self._pieces])
        while self._pos >= len(self._buf):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buf, self._pos = piece, 0
        return self._take(n)

    def _take(self, n: int) -> bytes:
        out = self._buf[self._pos : self._pos + n]  # the whole piece: the same object, no copy
        self._pos += len(out)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        return out


class GzipCompressor:
    """Incremental gzip (ISA-L level 1 by default: close to gzip -6 in size, much faster)."""

    def __init__(self, level: int = 1) -> None:
        from isal import isal_zlib

        self._c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.compress(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())
