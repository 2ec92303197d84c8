"""The walking differ (plugin ``io.containerd.differ.v1`` id ``walking``): Apply and Compare.

``apply(desc, mounts, provider)`` streams a layer blob from a content ``Provider`` onto the
snapshot described by ``mounts`` and returns the descriptor of what was applied (media
type ``application/vnd.oci.image.layer.v1.tar``, the *uncompressed* digest and size).  Like
containerd, a single overlay mount with an upper dir is applied straight into that upper
dir (overlay whiteouts, lower dirs as parents); a single writable bind mount is applied
onto its source; anything else is mounted in a temp dir and applied there.

``compare(lower, upper, ingester, ...)`` mounts both read-only, double-walks them
(``compare.write_diff``), compresses (gzip by default) and writes the result through a
content ``Writer``, with the label ``containerd.io/uncompressed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import errdefs, fsmodes
from ..content.interfaces import Ingester, Provider
from ..mount import Mount, mount_all, read_only, unmount_all
from ..mount.mount import MNT_DETACH, mountinfo
from ..plugin import InitContext, Registration, types
from ..threads import to_thread_uncancelled

if TYPE_CHECKING:
    from . import compression
    from .apply import ApplyResult, BlockingSource

LABEL_UNCOMPRESSED = "containerd.io/uncompressed"

log = logging.getLogger("pycontainerd.diff")

_NONDISTRIBUTABLE_MEDIA_TYPES = {
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}


def _apply_media_types() -> set[str]:
    from . import compression  # the codecs and media types at the first apply or diff (W6, idle PSS)

    return {
        compression.MEDIA_TYPE_LAYER,
        compression.MEDIA_TYPE_LAYER_GZIP,
        compression.MEDIA_TYPE_LAYER_ZSTD,
        compression.MEDIA_TYPE_DOCKER_LAYER,
        compression.MEDIA_TYPE_DOCKER_LAYER_GZIP,
        compression.MEDIA_TYPE_DOCKER_FOREIGN,
        *_NONDISTRIBUTABLE_MEDIA_TYPES,
    }


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


class _ContentStore(Provider, Ingester, Protocol):
    async def info(self, digest: str) -> Any: ...


def _opt(options: Sequence[str], key: str) -> str | None:
    for o in options:
        if o.startswith(key + "="):
            return o[len(key) + 1 :]
    return None


class WalkingDiffer:
    def __init__(self, tmp_root: str | os.PathLike[str]) -> None:
        self.tmp_root = Path(tmp_root)
        fsmodes.private_dir(self.tmp_root)
        # called with (layer bytes, seconds) after each apply (the metrics endpoint)
        self.apply_observers: list[Callable[[int, float], None]] = []

    # -- apply ----------------------------------------------------------------------------------
    async def apply(self, desc: Descriptor, mounts: Sequence[Mount], provider: Provider) -> Descriptor:
        from . import compression  # at the first apply (W6, idle PSS)

        mt = desc.media_type.split(";")[0].strip()
        if mt and mt not in _apply_media_types() and compression.from_media_type(mt) is None:
            raise errdefs.Unimplemented(f"unsupported diff media type: {desc.media_type}")
        started = time.monotonic()
        open_blob = getattr(provider, "open_blob", None)
        if open_blob is not None:
            # a local store: the apply thread reads the blob file itself
            blob = await open_blob(desc.digest)
            try:
                result = await self.apply_stream(blob, mounts)
            finally:
                blob.close()
        else:
            chunks: Any = provider.read(desc.digest)
            if inspect.isawaitable(chunks):  # a Provider written as a coroutine returning an iterator
                chunks = await chunks
            result = await self.apply_stream(chunks, mounts)
        for observe in self.apply_observers:
            observe(desc.size, time.monotonic() - started)
        return Descriptor(compression.MEDIA_TYPE_LAYER, result.digest, result.size)

    async def apply_stream(self, chunks: AsyncIterator[bytes] | BlockingSource, mounts: Sequence[Mount]) -> ApplyResult:
        from .apply import apply_layer  # the tar reader: loaded by the first apply, not by an idle daemon

        if len(mounts) == 1 and mounts[0].type == "overlay":
            upper = _opt(mounts[0].options, "upperdir")
            if upper:
                lowers = (_opt(mounts[0].options, "lowerdir") or "").split(":")
                return await apply_layer(chunks, upper, whiteouts="overlay", parents=[p for p in lowers if p])
        if len(mounts) == 1 and mounts[0].type == "bind" and "ro" not in mounts[0].options and not mounts[0].target:
            return await apply_layer(chunks, mounts[0].source)
        async with self._temp_mounted(mounts) as root:
            return await apply_layer(chunks, root)

    @contextlib.asynccontextmanager
    async def _temp_mounted(self, mounts: Sequence[Mount]) -> AsyncIterator[str]:
        tmp = await asyncio.to_thread(fsmodes.temp_dir, self.tmp_root, "mount-")
        try:
            try:
                if mounts:
                    await to_thread_uncancelled(mount_all, mounts, tmp)
                yield tmp
            finally:
                if mounts:  # also after a cancelled mount: the thread may have mounted
                    await to_thread_uncancelled(unmount_all, tmp)
        finally:
            if not mounts:
                import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

                await to_thread_uncancelled(shutil.rmtree, tmp, True)  # a plain dir, nothing mounted
            else:
                # rmdir, never rmtree: if the unmount failed, the snapshot is still mounted
                # here and its files must not be deleted (start-up cleanup retries the unmount)
                try:
                    await to_thread_uncancelled(os.rmdir, tmp)
                except OSError as exc:
                    log.warning("walking differ: leaving %s for start-up cleanup: %s", tmp, exc)

    def cleanup_tmpmounts(self) -> list[str]:
        """Unmount and remove what a crashed daemon left under ``tmpmounts`` (blocking; run
        at plugin init, before anything is served).  Returns the paths removed.  A directory
        that stays mounted is left alone: removing it would delete a snapshot's files."""
        removed: list[str] = []
        root = os.path.realpath(self.tmp_root)
        stale = sorted(
            {mi.mountpoint for mi in mountinfo() if mi.mountpoint.startswith(root + "/")}, key=len, reverse=True
        )
        for mp in stale:
            try:
                unmount_all(mp)
            except errdefs.ContainerdError as exc:
                log.warning("walking differ: cannot unmount stale %s (%s); detaching", mp, exc)
                with contextlib.suppress(errdefs.ContainerdError):
                    unmount_all(mp, MNT_DETACH)
        still = {mi.mountpoint for mi in mountinfo() if mi.mountpoint.startswith(root + "/")}
        for entry in os.scandir(root):
            if any(m == entry.path or m.startswith(entry.path + "/") for m in still):
                log.warning("walking differ: %s is still mounted; not removing it", entry.path)
                continue
            if entry.is_dir(follow_symlinks=False):
                import shutil

                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            removed.append(entry.path)
        if removed:
            log.info("walking differ: removed %d stale temp mounts under %s", len(removed), root)
        return removed

    # -- compare --------------------------------------------------------------------------------
    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        store: Ingester,
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        from . import compression  # at the first diff (W6, idle PSS)

        media_type = media_type or compression.MEDIA_TYPE_LAYER_GZIP
        if media_type == compression.MEDIA_TYPE_LAYER:
            kind = compression.Compression.NONE
        elif media_type == compression.MEDIA_TYPE_LAYER_GZIP:
            kind = compression.Compression.GZIP
        elif media_type == compression.MEDIA_TYPE_LAYER_ZSTD:
            kind = compression.Compression.ZSTD
        else:
            raise errdefs.Unimplemented(f"unsupported diff media type: {media_type}")
        ref = ref or f"diff-{os.urandom(16).hex()}"
        async with (
            self._temp_mounted(read_only(lower)) as lroot,
            self._temp_mounted(read_only(upper)) as uroot,
        ):
            writer = await store.writer(ref)
            try:
                uncompressed, written = await self._stream_diff(lroot, uroot, kind, writer)
                all_labels = dict(labels or {})
                all_labels[LABEL_UNCOMPRESSED] = uncompressed
                try:
                    digest = await writer.commit(written, "", all_labels)
                except errdefs.AlreadyExists:
                    digest = writer.digest()
            finally:
                await writer.close()
        return Descriptor(media_type, digest, written)

    async def _stream_diff(self, lroot: str, uroot: str, kind: compression.Compression, writer: Any) -> tuple[str, int]:
        """Run the walk in a thread; compressed chunks go to ``writer`` from the loop."""
        from . import compression  # at the first diff (W6, idle PSS)

        loop = asyncio.get_running_loop()
        q: asyncio.Queue[bytes | None] = asyncio.Queue(16)
        hasher = hashlib.sha256()
        zstd_c: Any = None
        if kind is compression.Compression.ZSTD:
            import zstandard

            zstd_c = zstandard.ZstdCompressor().compressobj()
        gz = compression.GzipCompressor() if kind is compression.Compression.GZIP else None
        buf: list[bytes] = []
        buffered = 0
        stop = threading.Event()

        def send(data: bytes) -> None:
            if stop.is_set():
                raise errdefs.Canceled("diff cancelled")
            asyncio.run_coroutine_threadsafe(q.put(data), loop).result()

        def emit(data: bytes) -> None:
            nonlocal buffered
            hasher.update(data)
            out = gz.compress(data) if gz else zstd_c.compress(data) if zstd_c else data
            if out:
                buf.append(out)
                buffered += len(out)
            if buffered >= 1 << 20:
                flush()

        def flush() -> None:
            nonlocal buffered
            if buf:
                send(b"".join(buf))
                buf.clear()
                buffered = 0

        from .compare import write_diff  # tarfile: loaded by the first diff, not by an idle daemon

        def work() -> None:
            try:
                write_diff(lroot, uroot, emit)
                tail = gz.flush() if gz else zstd_c.flush() if zstd_c else b""
                if tail:
                    buf.append(tail)
                flush()
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(q.put(None), loop).result()

        task = asyncio.ensure_future(asyncio.to_thread(work))
        written = 0
        try:
            while True:
                chunk = await q.get()
                if chunk is None:
                    break
                await writer.write(chunk)
                written += len(chunk)
            await task
        except BaseException:
            stop.set()
            while not task.done():  # unblock the worker so it sees ``stop``
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.get(), 0.1)
            raise
        return "sha256:" + hasher.hexdigest(), written


async def _init(ctx: InitContext) -> WalkingDiffer:
    await asyncio.to_thread(fsmodes.private_dir, ctx.root)
    differ = await asyncio.to_thread(WalkingDiffer, ctx.root / "tmpmounts")
    await asyncio.to_thread(differ.cleanup_tmpmounts)
    return differ


REGISTRATIONS = [Registration(type=types.DIFF, id="walking", init=_init)]
