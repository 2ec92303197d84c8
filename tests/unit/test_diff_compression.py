"""diff.compression: decompressors yield bounded pieces whatever the ratio (bombs), and
multi-member / multi-frame / truncated / trailing-garbage streams behave as before."""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import random
import threading
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
import zstandard
from isal import isal_zlib

from pycontainerd import errdefs
from pycontainerd.diff import apply as apply_mod
from pycontainerd.diff.compression import MAX_PIECE, Compression, DecompressingReader, decompressor, detect

MiB = 1 << 20
GiB = 1 << 30
_ZEROS = bytes(4 * MiB)


@functools.cache
def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes as one gzip member, compressed streaming (~3.5 KiB per MiB)."""
    c = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
    parts = [c.compress(_ZEROS) for _ in range(size // len(_ZEROS))]
    parts.append(c.flush())
    return b"".join(parts)


@functools.cache
def zstd_bomb(size: int) -> bytes:
    """``size`` zero bytes as one zstd frame (a few KiB per GiB)."""
    c = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [c.compress(_ZEROS) for _ in range(size // len(_ZEROS))]
    parts.append(c.flush())
    return b"".join(parts)


def split(blob: bytes, size: int) -> list[bytes]:
    return [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]


def run(kind: Compression, chunks: Iterable[bytes], max_piece: int = MAX_PIECE) -> bytes:
    pieces = list(decompressor(kind, chunks, max_piece=max_piece))
    if kind is not Compression.NONE:
        assert all(0 < len(p) <= max_piece for p in pieces)
    return b"".join(pieces)


def drain_bounded(kind: Compression, chunks: Iterable[bytes]) -> tuple[int, int, int]:
    """(total, largest piece, traced peak bytes) while consuming the pieces one by one."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        total = largest = 0
        for piece in decompressor(kind, chunks):
            total += len(piece)
            largest = max(largest, len(piece))
            del piece
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, largest, peak


# -- bombs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 512 << 10], ids=["one-chunk", "512KiB-chunks"])
def test_gzip_bomb_yields_bounded_pieces_in_bounded_memory(chunk: int | None) -> None:
    size = 1 * GiB
    bomb = gzip_bomb(size)
    assert len(bomb) < 4 * MiB and detect(bomb) is Compression.GZIP
    total, largest, peak = drain_bounded(Compression.GZIP, [bomb] if chunk is None else split(bomb, chunk))
    assert total == size
    assert largest <= MAX_PIECE
    # the input (allocated before tracing) is not counted: a few pieces at most
    assert peak < 8 * MiB, f"traced peak {peak / MiB:.1f} MiB"


@pytest.mark.parametrize("chunk", [None, 4096], ids=["one-chunk", "4KiB-chunks"])
def test_zstd_bomb_yields_bounded_pieces_in_bounded_memory(chunk: int | None) -> None:
    size = 4 * GiB
    bomb = zstd_bomb(size)
    assert len(bomb) < 1 * MiB and detect(bomb) is Compression.ZSTD
    total, largest, peak = drain_bounded(Compression.ZSTD, [bomb] if chunk is None else split(bomb, chunk))
    assert total == size
    assert largest <= MAX_PIECE
    assert peak < 8 * MiB, f"traced peak {peak / MiB:.1f} MiB"


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD])
def test_apply_pipeline_blocks_stay_bounded_on_a_bomb(kind: Compression) -> None:
    """The decompressing thread of apply_layer hands the extractor bounded blocks."""
    size = 256 * MiB
    bomb = gzip_bomb(size) if kind is Compression.GZIP else zstd_bomb(size)
    chunks: Iterator[bytes] = iter(split(bomb, 64 << 10))
    blocks = apply_mod._BlockQueue()
    result: dict[str, object] = {}
    sizes: list[int] = []

    def consume() -> None:
        with contextlib.suppress(apply_mod._Cancelled):
            while (blk := blocks.get()) is not None:
                sizes.append(len(blk))

    t = threading.Thread(target=consume)
    t.start()
    try:
        apply_mod._decompress_loop(lambda: next(chunks, None), blocks, result)
    except BaseException:
        blocks.cancelled.set()
        raise
    finally:
        t.join(60)
    assert not t.is_alive()
    assert result["size"] == size and result["compression"] is kind
    assert sum(sizes) == size
    assert max(sizes) <= 2 * apply_mod._COALESCE


# -- behaviour kept -----------------------------------------------------------------------------------
RAW1 = os.urandom(3000) + bytes(200_000) + b"hello" * 1000
RAW2 = b"second" * 5000
GZ1, GZ2 = gzip.compress(RAW1), gzip.compress(RAW2)
Z1, Z2 = zstandard.ZstdCompressor().compress(RAW1), zstandard.ZstdCompressor().compress(RAW2)
SKIPPABLE = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"abcd"

CHUNKS = [1, 7, 1000, 1 << 20]
PIECES = [1, 4096, MAX_PIECE]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("max_piece", PIECES)
@pytest.mark.parametrize(
    ("kind", "blob", "expected"),
    [
        (Compression.GZIP, GZ1, RAW1),
        (Compression.GZIP, GZ1 + GZ2, RAW1 + RAW2),
        (Compression.GZIP, GZ1 + bytes(100), RAW1),
        (Compression.GZIP, b"", b""),
        (Compression.ZSTD, Z1, RAW1),
        (Compression.ZSTD, Z1 + Z2, RAW1 + RAW2),
        (Compression.ZSTD, Z1 + SKIPPABLE + Z2, RAW1 + RAW2),
        (Compression.ZSTD, b"", b""),
        (Compression.NONE, RAW1, RAW1),
    ],
    ids=["gz", "gz-multi-member", "gz-zero-padding", "gz-empty", "zst", "zst-multi-frame",
         "zst-skippable-frame", "zst-empty", "none"],
)
def test_streams_decode_whole_at_any_chunk_and_piece_size(
    kind: Compression, blob: bytes, expected: bytes, chunk: int, max_piece: int
) -> None:
    if chunk == 1 and max_piece == 1 and len(blob) > 20_000:
        pytest.skip("slow and adds nothing")
    assert run(kind, split(blob, chunk), max_piece) == expected


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (GZ1[:-10], "truncated"),
        (GZ1[:5], "truncated"),
        (GZ1 + b"junk", "trailing garbage"),
        (GZ1 + bytes(10) + GZ2, "trailing garbage"),
        (GZ1[:30] + b"\xff" * 60 + GZ1[90:], "corrupt gzip"),
    ],
    ids=["truncated", "truncated-header", "trailing-garbage", "member-after-padding", "corrupt"],
)
def test_bad_gzip_is_invalid_argument(blob: bytes, message: str, chunk: int) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        run(Compression.GZIP, split(blob, chunk), 4096)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("blob", [Z1 + b"junk", Z1 + bytes(100)], ids=["trailing-garbage", "zero-padding"])
def test_bad_zstd_is_invalid_argument(blob: bytes, chunk: int) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="corrupt zstd"):
        run(Compression.ZSTD, split(blob, chunk), 4096)


def test_truncated_zstd_yields_what_it_has_as_before() -> None:
    """As before this change: a cut zstd frame ends the stream early without an error
    (the tar parser or the diffID check then refuses the layer)."""
    out = run(Compression.ZSTD, split(Z1[:-10], 1000), 4096)
    assert RAW1.startswith(out) and len(out) < len(RAW1)


def test_random_streams_round_trip_with_small_pieces() -> None:
    rnd = random.Random(7)
    for _ in range(20):
        raw = b"".join(
            rnd.choice([os.urandom(rnd.randint(0, 50_000)), bytes(rnd.randint(0, 300_000)),
                        b"ab" * rnd.randint(0, 100_000)])
            for _ in range(rnd.randint(1, 5))
        )
        c = isal_zlib.compressobj(rnd.choice([0, 1, 2, 3]), isal_zlib.DEFLATED, 31)
        gz = c.compress(raw) + c.flush()
        assert run(Compression.GZIP, split(gz, rnd.choice([3, 100, 8192])), rnd.choice([1, 10, 4096, MiB])) == raw
        zs = zstandard.ZstdCompressor(level=rnd.choice([1, 3, 9])).compress(raw)
        assert run(Compression.ZSTD, split(zs, rnd.choice([3, 100, 8192])), rnd.choice([1, 10, 4096, MiB])) == raw


def test_max_piece_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decompressor(Compression.GZIP, [], max_piece=0)


def test_gzip_member_split_between_its_magic_bytes() -> None:
    """Regression: a chunk ending right after a second member's first byte (0x1f) was
    called trailing garbage (content store chunks end anywhere)."""
    assert run(Compression.GZIP, [GZ1 + GZ2[:1], GZ2[1:]]) == RAW1 + RAW2
    with pytest.raises(errdefs.InvalidArgument, match="trailing garbage"):
        run(Compression.GZIP, [GZ1 + b"\x1f"])


# -- DecompressingReader (image archive import) ------------------------------------------------------
@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD])
@pytest.mark.parametrize("read_n", [10240, 64 * MiB, -1], ids=["tarfile-reads", "huge-reads", "read-all"])
def test_decompressing_reader_is_bounded_on_a_bomb(kind: Compression, read_n: int) -> None:
    size = 1 * GiB if read_n > MiB else 256 * MiB
    bomb = gzip_bomb(size) if kind is Compression.GZIP else zstd_bomb(size)
    r = DecompressingReader(io.BytesIO(bomb))
    assert r.compression is kind
    if read_n == -1:  # read() with no size is the caller's choice of unbounded: it works
        assert len(r.read()) == size
        return
    tracemalloc.start()
    try:
        total = largest = 0
        while data := r.read(read_n):
            total += len(data)
            largest = max(largest, len(data))
            del data
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size and largest <= MAX_PIECE and peak < 8 * MiB


@pytest.mark.parametrize("blob", [b"", b"ab", b"plain tar bytes" * 1000], ids=["empty", "short", "plain"])
def test_decompressing_reader_passes_uncompressed_through(blob: bytes) -> None:
    r = DecompressingReader(io.BytesIO(blob))
    assert r.compression is Compression.NONE
    got = b""
    while data := r.read(7):
        assert len(data) <= 7
        got += data
    assert got == blob
    r = DecompressingReader(io.BytesIO(blob))
    assert r.read(1)[:1] == blob[:1] and r.read() == blob[1:]


def test_decompressing_reader_multi_member_small_reads() -> None:
    r = DecompressingReader(io.BytesIO(GZ1 + GZ2), read_size=100)
    got = b""
    while data := r.read(333):
        got += data
    assert got == RAW1 + RAW2
