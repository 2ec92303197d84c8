"""Persistent network namespaces for pods (containerd's ``pkg/netns``).

A pod's network namespace must outlive its processes (CNI sets it up before the sandbox
container starts, and tears it down after it stopped), so it is *pinned*: its nsfs file
(``/proc/<pid>/ns/net``) is bind-mounted onto an empty file, ``/var/run/netns/cni-<uuid>``
(where ``ip netns`` looks) or ``<cri state dir>/netns/cni-<uuid>`` when
``netns_mounts_under_state_dir`` is set.  Removing it is unmount (lazy) plus unlink; the
namespace dies with its last user.

Where the new namespace comes from: ``unshare(CLONE_NEWNET)`` moves only the calling thread,
and a thread of the daemon left in (or failing to leave) another namespace would open every
later socket there.  So the namespace is made by a thread of its own that does nothing else
and ends right after: it unshares, bind-mounts ``/proc/thread-self/ns/net`` (its new
namespace) onto the pin and returns; no other work ever runs on it, so no socket can be
opened there (a fork+exec'd helper process did the same, at the price of starting an
interpreter: most of the call).  ``create(pid=...)`` pins the namespace of an existing process
instead (containerd's ``NewNetNSFromPID``).

The blocking steps (mkdir, mount, umount, stat) run in worker threads, and cleanup is never
cut short by cancellation.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import socket
import threading
import uuid
from pathlib import Path

from .. import errdefs, fsmodes
from ..mount import Mount, mount_all, unmount
from ..mountopts import MNT_DETACH, UMOUNT_NOFOLLOW
from ..threads import to_thread_uncancelled

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: its CLONE_NEW* type (Linux 4.11)

_libc = ctypes.CDLL(None, use_errno=True)


def netns_dir(cri_state_dir: str | os.PathLike[str], *, under_state_dir: bool) -> Path:
    """Where pod namespaces are pinned: ``/var/run/netns`` or ``<cri state>/netns``."""
    return Path(cri_state_dir) / "netns" if under_state_dir else Path(NETNS_RUN_DIR)


def _prepare(base: Path, name: str) -> Path:
    try:
        if base == Path(NETNS_RUN_DIR):
            base.mkdir(mode=0o755, parents=True, exist_ok=True)  # where ip-netns(8) looks; as containerd
        else:
            fsmodes.private_dir(base, chmod=False)
    except OSError as exc:
        raise errdefs.from_oserror(exc, "create network namespace directory") from exc
    path = base / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except OSError as exc:
        raise errdefs.from_oserror(exc, "create network namespace mount point") from exc
    os.close(fd)
    return path


def _is_netns(path: str) -> bool:
    """True if ``path`` is a pinned network namespace (an nsfs file of type net)."""
    try:
        st = os.stat(path)
        ref = os.stat("/proc/self/ns/net")
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise errdefs.from_oserror(exc, "stat network namespace") from exc
    if st.st_dev != ref.st_dev:
        return False  # not on nsfs: the plain file of a namespace that was unmounted
    # on nsfs: a network namespace, not another kind
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    while True:  # every mount stacked on the file
        try:
            unmount(path, MNT_DETACH | UMOUNT_NOFOLLOW)
        except errdefs.ContainerdError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                break  # not (or no longer) a mount point
            raise
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise errdefs.from_oserror(exc, "remove network namespace") from exc


def _pin(source: str, path: str) -> None:
    mount_all([Mount("bind", source, ["bind"])], path)


def _unshare_and_pin(path: str) -> None:
    """A new network namespace pinned at ``path``, made on a thread that ends right after."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise errdefs.from_oserror(OSError(err, os.strerror(err)), "create network namespace (unshare)")
            _pin("/proc/thread-self/ns/net", path)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    t = threading.Thread(target=run, name="netns-unshare", daemon=True)
    t.start()
    t.join()
    if failed:
        raise failed[0]


async def create(base_dir: str | os.PathLike[str], *, pid: int | None = None) -> str:
    """Pin a new network namespace (or process ``pid``'s) under ``base_dir``; its path.

    Nothing is left behind on failure or cancellation."""
    name = f"cni-{uuid.uuid4()}"
    spath = os.path.join(base_dir, name)
    try:
        await to_thread_uncancelled(_prepare, Path(base_dir), name)
        if pid is None:
            await to_thread_uncancelled(_unshare_and_pin, spath)
        else:
            await to_thread_uncancelled(_pin, f"/proc/{pid}/ns/net", spath)
    except BaseException:
        await to_thread_uncancelled(_remove, spath)
        raise
    return spath


async def remove(path: str | os.PathLike[str]) -> None:
    """Unpin and delete the namespace file at ``path``; a missing one is fine."""
    await to_thread_uncancelled(_remove, os.fspath(path))


async def exists(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a pinned network namespace (containerd's ``!Closed()``)."""
    return await asyncio.to_thread(_is_netns, os.fspath(path))


# -- connecting to a port inside a namespace (CRI port-forward) ------------------------------------
DIAL_TIMEOUT = 10.0


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _dial_in(path: str, port: int, timeout: float) -> socket.socket:
    """On a thread of its own: enter ``path``'s namespace, connect to localhost:port, come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path else -1
        try:
            if target >= 0:
                _setns(target)
            try:
                errors: list[str] = []
                first: OSError | None = None
                for family, host, name in ((socket.AF_INET, "127.0.0.1", "tcp4 127.0.0.1"),
                                           (socket.AF_INET6, "::1", "tcp6 [::1]")):
                    s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                    try:
                        s.settimeout(timeout)
                        s.connect((host, port))
                    except OSError as exc:
                        s.close()
                        first = first or exc
                        # Go's wording, as containerd reports it
                        errors.append(f"dial {name}:{port}: connect: {(exc.strerror or str(exc)).lower()}")
                        continue
                    s.setblocking(False)
                    return s
                assert first is not None
                raise OSError(first.errno, f"IPv4: {errors[0]} IPv6: {errors[1]}")
            finally:
                if target >= 0:
                    _setns(own)  # if this fails the thread dies with the error: it is never reused
        finally:
            if target >= 0:
                os.close(target)
    finally:
        os.close(own)


async def dial(path: str, port: int, connect_timeout: float = DIAL_TIMEOUT) -> socket.socket:
    """A connected non-blocking TCP socket to 127.0.0.1:port (else [::1]:port) in namespace ``path``.

    ``setns`` moves only the calling thread, so the connect runs on a fresh thread that does
    nothing else and ends right after (never the loop's, never a pool's); the socket keeps
    its namespace and is used from the loop.  ``path`` empty: the daemon's own namespace.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, exc: BaseException | None) -> None:
        if fut.done():  # the caller gave up meanwhile
            if sock is not None:
                sock.close()
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(sock)  # type: ignore[arg-type]

    def run() -> None:
        try:
            sock = _dial_in(path, port, connect_timeout)
        except BaseException as exc:
            loop.call_soon_threadsafe(deliver, None, exc)
            return
        try:
            loop.call_soon_threadsafe(deliver, sock, None)
        except RuntimeError:  # the loop is gone
            sock.close()

    threading.Thread(target=run, name=f"netns-dial-{port}", daemon=True).start()
    try:
        return await fut
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
            where = repr(path) if path else "of the host"
            raise errdefs.Unavailable(f"failed to connect to localhost:{port} inside namespace {where}, "
                                      f"{exc.strerror or exc}") from exc
        raise errdefs.from_oserror(exc, f"connect to localhost:{port} inside namespace {path}") from exc
