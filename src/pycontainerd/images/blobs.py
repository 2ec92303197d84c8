"""Small helpers over the content Protocols: write a blob from chunks, read a small blob.

They work with any ``content.interfaces`` implementation: the daemon's local store, the
metadata store, or the client's gRPC proxy.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from .. import errdefs
from ..content.interfaces import Ingester, Provider, Writer
from . import digest as digests
from .models import MAX_MANIFEST_SIZE, Descriptor

LOCK_BACKOFF_START = 0.016
LOCK_BACKOFF_MAX = 2.0


async def open_writer(store: Ingester, ref: str, total: int = 0, expected: str = "",
                      wait_limit: float | None = None) -> Writer:
    """Open an ingest, waiting (16 ms → 2 s backoff) while another writer holds the ref.

    Raises AlreadyExists when ``expected`` is already in the store.
    """
    delay = LOCK_BACKOFF_START
    loop = asyncio.get_running_loop()
    deadline = None if wait_limit is None else loop.time() + wait_limit
    while True:
        try:
            return await store.writer(ref, total, expected)
        except errdefs.Unavailable:
            if deadline is not None and loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOCK_BACKOFF_MAX)


async def write_blob(store: Ingester, ref: str, data: bytes | AsyncIterable[bytes], size: int, expected: str,
                     labels: Mapping[str, str] | None = None) -> bool:
    """Write and commit a blob; False when it already existed (not an error)."""
    try:
        w = await open_writer(store, ref, size, expected)
    except errdefs.AlreadyExists:
        return False
    try:
        st = await w.status()
        if st.offset and isinstance(data, bytes | bytearray):
            # resume an earlier attempt
            if st.offset > len(data):
                await w.truncate(0)
                st.offset = 0
            data = data[st.offset:]
        elif st.offset:
            await w.truncate(0)
        if isinstance(data, bytes | bytearray):
            for i in range(0, len(data), 1 << 20):
                await w.write(bytes(data[i:i + (1 << 20)]))
        else:
            async for chunk in data:
                await w.write(chunk)
        try:
            await w.commit(size, expected, labels)
        except errdefs.AlreadyExists:
            return False
        return True
    finally:
        await w.close()


async def read_blob(store: Provider, desc: Descriptor, limit: int = MAX_MANIFEST_SIZE) -> bytes:
    """Read a small blob fully, size-checked against ``limit`` and digest-verified."""
    if desc.size > limit:
        raise errdefs.InvalidArgument(f"blob {desc.digest} is too large to read into memory "
                                      f"({desc.size} bytes > {limit})")
    buf = bytearray()
    async for chunk in iter_read(store, desc.digest):
        buf.extend(chunk)
        if len(buf) > limit:
            raise errdefs.InvalidArgument(f"blob {desc.digest} is larger than {limit} bytes")
    data = bytes(buf)
    digests.verify(data, desc.digest, desc.size if desc.size else -1, "blob")
    return data


async def iter_read(store: Provider, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
    """``store.read`` whether the implementation is an async generator or a coroutine returning one."""
    it: Any = store.read(digest, offset, size)
    if inspect.isawaitable(it):
        it = await it
    async for chunk in it:
        yield chunk
