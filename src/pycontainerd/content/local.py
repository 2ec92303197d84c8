"""The local content store: blobs on the filesystem, shared by every namespace.

Layout under the store's root (as containerd's ``content/local``)::

    blobs/sha256/<hex>            committed blobs, read-only (0400), named by their digest
    ingest/<sha256(ref)>/         one directory per open ingest
        data                      the bytes written so far
        ref                       the ingest's ref (checked on resume: a hash collision guard)
        total                     the announced size, when known
        expected                  the announced digest, when known
        startedat, updatedat      timestamps (ns since the epoch, as text)

Blobs are image contents (and pushed or imported secrets), so the store is root's only: its
directories are ``0700``, ingest files ``0600`` (see ``pycontainerd.fsmodes``).

Theory of operation.  ``writer(ref)`` takes the ref's lock (a second writer gets
``Unavailable``, which clients retry) and opens or resumes the ingest.  Bytes are appended
and hashed as they arrive, so committing a blob written in one run never re-reads it;
after a restart the data written so far is re-hashed once, when the ingest is resumed.
``commit`` fsyncs the data, checks the size and the digest (a mismatch is
``FailedPrecondition`` and leaves nothing visible), renames the data into ``blobs/`` and
fsyncs that directory, so a blob that is visible is complete and correct, even after a
crash.  It is also available in three steps (``prepare_commit_sync``, ``publish_sync``,
``finish_commit_sync``) so that the metadata store keeps only the rename inside its
transaction.  A blob that was already there makes the commit ``AlreadyExists`` (the ingest is
dropped).  ``close`` releases the lock and keeps the ingest for a later resume; ``abort``
removes it.

All file work runs in worker threads (``asyncio.to_thread``); the ``*_sync`` methods are
for callers already on a worker thread (the metadata store publishes inside its database
transaction).  Without a label store (the default, as under the metadata store, which
keeps labels per namespace) ``update`` is refused; ``labels=True`` keeps labels in memory,
which the contract suite uses.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from .. import errdefs, fsmodes
from ..plugin import InitContext, Registration, types
from ..threads import to_thread_uncancelled
from .helpers import READ_CHUNK, info_adaptor, status_adaptor, update_labels, validate_digest, validate_labels
from .interfaces import Info, Status

_INLINE_WRITE = 64 << 10
SMALL_BLOB_MAX = 256 << 10  # blobs up to this size are cached whole (manifests, configs)
SMALL_CACHE_BYTES = 4 << 20  # at most this much in all
"""Chunks smaller than this are written and hashed on the event loop; bigger ones in a thread."""


def _now() -> int:
    return time.time_ns()


def _open_and_read(path: Path, pos: int, size: int) -> tuple[int, int, bytes]:
    """Open a blob and read its first chunk from ``pos``: (fd, blob size, chunk)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(fd).st_size
        end = total if size <= 0 else min(total, pos + size)
        first = os.pread(fd, min(READ_CHUNK, end - pos), pos) if pos < end else b""
    except BaseException:
        os.close(fd)
        raise
    return fd, total, first


def _read_text(path: Path) -> str:
    return path.read_text()


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, fsmodes.PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobFile:
    """A committed blob open for blocking, sequential ``read`` calls from a worker thread.

    ``close`` may come from another thread (a cancelled apply whose worker is still
    running): it waits for a read in progress, and later reads fail instead of reading
    whatever file reused the descriptor number.
    """

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.size = size

    def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to ``n`` bytes; b"" at the end."""
        with self._lock:
            if self._fd < 0:
                raise errdefs.Canceled("blob file is closed")
            return os.read(self._fd, n)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_lock"):
            self.close()


class LocalStore:
    """Blobs and ingests under ``root``; implements the content ``Store`` Protocol."""

    def __init__(self, root: Path | str, *, labels: bool = False) -> None:
        self.root = Path(root)
        self._set_up = False
        self._label_store: dict[str, dict[str, str]] | None = {} if labels else None
        self._label_updated: dict[str, int] = {}
        self._locks: dict[str, int] = {}
        self._locks_mu = threading.Lock()
        # Small blobs (manifests, indexes, configs) are read again and again — every
        # ``ctr run``, image listing and CRI status reads them — and a blob never changes
        # once committed (its name is its digest), so their bytes are kept in a small LRU.
        # ``delete_sync`` (every deletion, GC included, goes through it) drops them.
        self._small: OrderedDict[str, bytes] = OrderedDict()
        self._small_bytes = 0
        self._small_mu = threading.Lock()

    # -- small-blob cache ---------------------------------------------------------------------
    def _cached(self, digest: str) -> bytes | None:
        with self._small_mu:
            data = self._small.get(digest)
            if data is not None:
                self._small.move_to_end(digest)
            return data

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) > SMALL_BLOB_MAX:
            return
        with self._small_mu:
            if digest in self._small:
                return
            self._small[digest] = data
            self._small_bytes += len(data)
            while self._small_bytes > SMALL_CACHE_BYTES:
                _, old = self._small.popitem(last=False)
                self._small_bytes -= len(old)

    def _forget(self, digest: str) -> None:
        with self._small_mu:
            old = self._small.pop(digest, None)
            if old is not None:
                self._small_bytes -= len(old)

    # -- paths ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        validate_digest(digest)
        alg, _, enc = digest.partition(":")
        return self.root / "blobs" / alg / enc

    def ingest_root(self, ref: str) -> Path:
        return self.root / "ingest" / hashlib.sha256(ref.encode()).hexdigest()

    def setup_sync(self) -> None:
        # the first call also closes directories an older version made 0755
        first = not self._set_up
        fsmodes.private_dir(self.root, chmod=first)
        fsmodes.private_dir(self.root / "blobs", chmod=first)
        fsmodes.private_dir(self.root / "blobs" / "sha256", chmod=first)
        fsmodes.private_dir(self.root / "ingest", chmod=first)
        self._set_up = True

    # -- locks ------------------------------------------------------------------------------
    def _try_lock(self, ref: str) -> None:
        with self._locks_mu:
            if ref in self._locks:
                raise errdefs.Unavailable(f"ref {ref} locked")
            self._locks[ref] = _now()

    def _unlock(self, ref: str) -> None:
        with self._locks_mu:
            self._locks.pop(ref, None)

    def is_locked(self, ref: str) -> bool:
        with self._locks_mu:
            return ref in self._locks

    # -- Manager / Provider -----------------------------------------------------------------
    def _info_sync(self, digest: str) -> Info:
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}: not found") from None
        return self._info_from_stat(digest, st)

    def _info_from_stat(self, digest: str, st: os.stat_result) -> Info:
        labels: dict[str, str] = {}
        updated = st.st_mtime_ns
        if self._label_store is not None:
            labels = dict(self._label_store.get(digest, {}))
            updated = self._label_updated.get(digest, updated)
        return Info(digest=digest, size=st.st_size, created_at=st.st_mtime_ns, updated_at=updated, labels=labels)

    def exists_sync(self, digest: str) -> int | None:
        """The blob's size if it is committed, else None (for callers on a worker thread)."""
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    async def info(self, digest: str) -> Info:
        return await asyncio.to_thread(self._info_sync, digest)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        if self._label_store is None:
            raise errdefs.FailedPrecondition("update not supported on immutable content store")
        current = await self.info(info.digest)
        labels = update_labels(current.labels, info.labels, fieldpaths, f"content info {info.digest!r}")
        self._label_store[info.digest] = labels
        self._label_updated[info.digest] = max(_now(), current.updated_at + 1)
        return await self.info(info.digest)

    def _walk_sync(self) -> builtins.list[Info]:
        out: builtins.list[Info] = []
        blobs = self.root / "blobs"
        try:
            algs = sorted(os.listdir(blobs))
        except FileNotFoundError:
            return out
        for alg in algs:
            d = blobs / alg
            try:
                names = sorted(os.listdir(d))
            except NotADirectoryError:
                continue
            for name in names:
                digest = f"{alg}:{name}"
                try:
                    validate_digest(digest)
                    st = (d / name).stat()
                except (errdefs.InvalidArgument, FileNotFoundError):
                    continue
                out.append(self._info_from_stat(digest, st))
        return out

    def blob_digests_sync(self) -> builtins.list[str]:
        """The digest of every blob on disk (blocking: for the garbage collector's thread)."""
        return [i.digest for i in self._walk_sync()]

    async def list(self, filters_: Sequence[str] = ()) -> builtins.list[Info]:
        from .. import filters  # the filter language (and regexp) at the first filtered call: W6, idle PSS
        flt = filters.parse_all(list(filters_))
        return [i for i in await asyncio.to_thread(self._walk_sync) if flt.match(info_adaptor(i))]

    def delete_sync(self, digest: str) -> int:
        """Remove the blob; the bytes it held on disk (the GC reports what it freed)."""
        path = self.blob_path(digest)
        self._forget(digest)
        try:
            freed = path.stat().st_blocks * 512
            path.unlink()
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}: not found") from None
        if self._label_store is not None:
            self._label_store.pop(digest, None)
            self._label_updated.pop(digest, None)
        return freed

    async def delete(self, digest: str) -> None:
        await asyncio.to_thread(self.delete_sync, digest)

    async def open_blob(self, digest: str) -> BlobFile:
        """The blob opened for blocking sequential reads in a worker thread (close it).

        For consumers that process a whole blob in a thread (the differ's apply): reading
        there directly saves a hop through the event loop per chunk.  The open descriptor
        keeps the bytes readable even if the blob is deleted meanwhile.
        """
        path = self.blob_path(digest)

        def _open() -> BlobFile:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return BlobFile(fd, os.fstat(fd).st_size)
            except BaseException:
                os.close(fd)
                raise

        try:
            return await asyncio.to_thread(_open)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}: not found") from None

    async def read(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """Stream ``size`` bytes (0: to the end) from ``offset`` in chunks of at most 1 MiB."""
        pos = max(offset, 0)
        data = self._cached(digest)
        if data is not None:
            end = len(data) if size <= 0 else min(len(data), pos + size)
            if pos < end:
                yield data[pos:end]
            return
        path = self.blob_path(digest)
        try:
            # open, size and first chunk in one worker-thread hop (a small blob: the only one)
            fd, total, first = await asyncio.to_thread(_open_and_read, path, pos, size)
        except FileNotFoundError:
            raise errdefs.NotFound(f"content {digest}: not found") from None
        try:
            end = total if size <= 0 else min(total, pos + size)
            if pos == 0 and len(first) == total:
                self._remember(digest, first)
            if first:
                pos += len(first)
                yield first
            while pos < end:
                chunk = await asyncio.to_thread(os.pread, fd, min(READ_CHUNK, end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    # -- IngestManager ----------------------------------------------------------------------
    def _status_sync(self, ingest: Path) -> Status:
        try:
            st = (ingest / "data").stat()
            ref = _read_text(ingest / "ref")
        except FileNotFoundError as exc:
            raise errdefs.NotFound(f"ingest {ingest.name}: {exc.strerror}: not found") from None
        updated = max(_read_int(ingest / "updatedat"), st.st_mtime_ns)
        expected = ""
        try:
            expected = _read_text(ingest / "expected").strip()
        except FileNotFoundError:
            pass
        return Status(
            ref=ref,
            offset=st.st_size,
            total=_read_int(ingest / "total"),
            expected=expected,
            started_at=_read_int(ingest / "startedat"),
            updated_at=updated,
        )

    async def status(self, ref: str) -> Status:
        st = await asyncio.to_thread(self._status_sync, self.ingest_root(ref))
        if st.ref != ref:
            raise errdefs.NotFound(f"ingest ref {ref!r}: not found")
        return st

    def _list_statuses_sync(self) -> builtins.list[Status]:
        out: builtins.list[Status] = []
        try:
            names = sorted(os.listdir(self.root / "ingest"))
        except FileNotFoundError:
            return out
        for name in names:
            try:
                out.append(self._status_sync(self.root / "ingest" / name))
            except errdefs.NotFound:
                continue  # committed or aborted while listing
        return out

    async def list_statuses(self, filters_: Sequence[str] = ()) -> builtins.list[Status]:
        from .. import filters  # at first use (W6, idle PSS)
        flt = filters.parse_all(list(filters_))
        return [s for s in await asyncio.to_thread(self._list_statuses_sync) if flt.match(status_adaptor(s))]

    def abort_sync(self, ref: str) -> None:
        import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

        root = self.ingest_root(ref)
        try:
            shutil.rmtree(root)
        except FileNotFoundError:
            raise errdefs.NotFound(f"ingest ref {ref!r}: not found") from None

    async def abort(self, ref: str) -> None:
        await asyncio.to_thread(self.abort_sync, ref)

    # -- Ingester ---------------------------------------------------------------------------
    async def writer(self, ref: str, total: int = 0, expected: str = "") -> LocalWriter:
        if not ref:
            raise errdefs.InvalidArgument("ref must not be empty")
        if expected:
            validate_digest(expected)
        self._try_lock(ref)
        # The open runs to completion in its thread even when the caller is cancelled (a
        # client that hangs up): the writer it makes then has no owner, so it is closed —
        # releasing the lock — once the thread is done, not before (another writer could
        # otherwise take the ref and lose its lock to the late close).
        job = asyncio.ensure_future(asyncio.to_thread(self._open_writer_sync, ref, total, expected))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(functools.partial(self._close_orphan, ref))
            raise
        except BaseException:
            self._unlock(ref)
            raise

    def _close_orphan(self, ref: str, job: asyncio.Future[LocalWriter]) -> None:
        if job.cancelled() or job.exception() is not None:
            self._unlock(ref)
            return
        asyncio.get_running_loop().run_in_executor(None, job.result().close_sync)

    def _open_writer_sync(self, ref: str, total: int, expected: str) -> LocalWriter:
        if expected and self.exists_sync(expected) is not None:
            raise errdefs.AlreadyExists(f"content {expected}: already exists")
        self.setup_sync()
        path = self.ingest_root(ref)
        data = path / "data"
        hasher = hashlib.sha256()
        resumed = False
        started = updated = 0
        offset = 0
        try:
            path.mkdir(mode=fsmodes.PRIVATE_DIR)
        except FileExistsError:
            try:
                st = self._status_sync(path)
                if st.ref == ref and not (total > 0 and st.total > 0 and total != st.total):
                    offset = _hash_file(data, hasher)
                    started, updated = st.started_at, st.updated_at
                    total = total or st.total
                    expected = expected or st.expected
                    resumed = True
            except errdefs.NotFound:
                pass
        if not resumed:
            # a new ingest (or an unusable leftover, which is started again)
            hasher = hashlib.sha256()
            started = updated = _now()
            _write_text(path / "ref", ref)
            _write_text(path / "startedat", str(started))
            _write_text(path / "updatedat", str(started))
            if total > 0:
                _write_text(path / "total", str(total))
            if expected:
                _write_text(path / "expected", expected)
        fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, fsmodes.PRIVATE_FILE)
        if not resumed:
            os.ftruncate(fd, 0)
        return LocalWriter(self, ref, path, fd, offset, total, expected, hasher, started, updated)


def _hash_file(path: Path, hasher: hashlib._Hash) -> int:
    n = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                return n
            hasher.update(chunk)
            n += len(chunk)


class LocalWriter:
    """An open ingest of the local store; holds the ref's lock until ``close``/``commit``."""

    def __init__(
        self,
        store: LocalStore,
        ref: str,
        path: Path,
        fd: int,
        offset: int,
        total: int,
        expected: str,
        hasher: hashlib._Hash,
        started_at: int,
        updated_at: int,
    ) -> None:
        self._store = store
        self._ref = ref
        self._path = path
        self._fd: int | None = fd
        self._offset = offset
        self._total = total
        self._expected = expected
        self._hasher = hasher
        self._started_at = started_at
        self._updated_at = updated_at
        self._mu = threading.Lock()
        self._prepared = ""  # the verified digest, once prepare_commit_sync succeeded
        self._published = False  # renamed into blobs/
        self._done = False  # the ingest dir can go (published, or the blob already existed)
        self._locked = True  # holds the ref's lock

    def _release_lock(self) -> None:
        if self._locked:
            self._locked = False
            self._store._unlock(self._ref)

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def offset(self) -> int:
        return self._offset

    def _require_open(self) -> int:
        if self._fd is None:
            raise errdefs.FailedPrecondition(f"writer for ref {self._ref} is closed")
        return self._fd

    def status_sync(self) -> Status:
        return Status(
            ref=self._ref,
            offset=self._offset,
            total=self._total,
            expected=self._expected,
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    async def status(self) -> Status:
        return self.status_sync()

    def _write_sync(self, data: bytes) -> int:
        with self._mu:
            fd = self._require_open()
            view = memoryview(data)
            pos = self._offset
            while view:
                n = os.pwrite(fd, view, pos)
                pos += n
                view = view[n:]
            self._hasher.update(data)
            self._offset = pos
            self._updated_at = _now()
            return pos

    async def write(self, data: bytes) -> int:
        if not data:
            return self._offset
        if len(data) < _INLINE_WRITE:
            return self._write_sync(data)
        return await asyncio.to_thread(self._write_sync, data)

    def truncate_sync(self, size: int) -> None:
        with self._mu:
            fd = self._require_open()
            if size < 0 or size > self._offset:
                raise errdefs.InvalidArgument(
                    f"cannot truncate ingest {self._ref} to {size} bytes: it holds {self._offset}"
                )
            os.ftruncate(fd, size)
            hasher = hashlib.sha256()
            pos = 0
            while pos < size:
                chunk = os.pread(fd, min(READ_CHUNK, size - pos), pos)
                if not chunk:
                    break
                hasher.update(chunk)
                pos += len(chunk)
            self._hasher = hasher
            self._offset = size
            self._updated_at = _now()

    async def truncate(self, size: int) -> None:
        await asyncio.to_thread(self.truncate_sync, size)

    def digest(self) -> str:
        return "sha256:" + self._hasher.copy().hexdigest()

    def _fsync(self) -> None:
        with self._mu:
            if self._fd is not None:
                os.fsync(self._fd)

    async def sync(self) -> None:
        """Flush the data to disk (so a commit inside a transaction has little left to do)."""
        await asyncio.to_thread(self._fsync)

    # A commit in three steps, so that a caller who records the blob in a database transaction
    # (the metadata store) only has the rename inside it:
    #   prepare_commit_sync  fsync + close the data, check size and digest, make it read-only;
    #   publish_sync         rename it into blobs/ (AlreadyExists if the digest is there);
    #   finish_commit_sync   fsync blobs/ (the rename is durable before the caller answers),
    #                        remove the ingest dir, release the lock -- always call it.
    def prepare_commit_sync(self, size: int, expected: str) -> str:
        """Step 1: the verified digest of the complete data (``FailedPrecondition`` on a mismatch)."""
        with self._mu:
            fd = self._require_open()
            try:
                os.fsync(fd)
                actual_size = os.fstat(fd).st_size
            finally:
                os.close(fd)
                self._fd = None
            if size > 0 and size != actual_size:
                raise errdefs.FailedPrecondition(f"unexpected commit size {actual_size}, expected {size}")
            dgst = "sha256:" + self._hasher.hexdigest()
            if expected and expected != dgst:
                raise errdefs.FailedPrecondition(f"unexpected commit digest {dgst}, expected {expected}")
            data = self._path / "data"
            os.chmod(data, fsmodes.READONLY_FILE)
            now = _now()
            os.utime(data, ns=(now, now))
            fsmodes.private_dir(self._store.blob_path(dgst).parent, chmod=False)
            self._prepared = dgst
            return dgst

    def publish_sync(self) -> str:
        """Step 2: make the prepared blob visible (one ``stat`` and one ``rename``)."""
        with self._mu:
            dgst = self._prepared
            if not dgst:
                raise errdefs.FailedPrecondition(f"writer for ref {self._ref}: commit not prepared")
            target = self._store.blob_path(dgst)
            if target.exists():
                self._done = True  # the ingest is dropped by finish_commit_sync
                raise errdefs.AlreadyExists(f"content {dgst}: already exists")
            try:
                os.rename(self._path / "data", target)
            except OSError as exc:
                raise errdefs.from_oserror(exc, f"commit {self._ref}") from exc
            self._done = self._published = True
            return dgst

    def finish_commit_sync(self) -> None:
        """Step 3: after publishing (or failing to), whatever happened; releases the lock."""
        with self._mu:
            try:
                if self._fd is not None:  # never prepared: the ingest stays for a resume
                    fd, self._fd = self._fd, None
                    os.close(fd)
                if self._published:
                    _fsync_dir(self._store.blob_path(self._prepared).parent)
                if self._done:
                    import shutil

                    shutil.rmtree(self._path, ignore_errors=True)
                elif self._prepared:  # prepared, not published: writable again for a resume
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(self._path / "data", fsmodes.PRIVATE_FILE)
            finally:
                self._release_lock()

    async def prepare_commit(self, size: int, expected: str) -> str:
        return await asyncio.to_thread(self.prepare_commit_sync, size, expected)

    async def finish_commit(self) -> None:
        await asyncio.to_thread(self.finish_commit_sync)

    def commit_sync(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> str:
        """Verify and publish the blob (see the module docstring); always releases the lock."""
        try:
            if labels:
                validate_labels(labels)
            self.prepare_commit_sync(size, expected)
            dgst = self.publish_sync()
            if self._store._label_store is not None and labels:
                self._store._label_store[dgst] = {k: v for k, v in labels.items() if v}
            return dgst
        finally:
            self.finish_commit_sync()

    async def commit(self, size: int, expected: str, labels: Mapping[str, str] | None = None) -> str:
        return await asyncio.to_thread(self.commit_sync, size, expected, labels)

    def close_sync(self) -> None:
        with self._mu:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                _write_text(self._path / "updatedat", str(self._updated_at))
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # aborted meanwhile
                    raise
            finally:
                os.close(fd)
                self._release_lock()

    async def close(self) -> None:
        if self._fd is None:
            return
        # callers close in ``finally`` blocks of handlers that the client's hang-up cancels; a
        # cancelled, not yet started close would keep the fd and the ref's lock forever (a
        # resumed pull then waited on "ref locked")
        await to_thread_uncancelled(self.close_sync)


async def _init(ctx: InitContext) -> LocalStore:
    store = LocalStore(ctx.root)
    await asyncio.to_thread(store.setup_sync)
    return store


REGISTRATIONS = [Registration(type=types.CONTENT, id="content", init=_init)]
