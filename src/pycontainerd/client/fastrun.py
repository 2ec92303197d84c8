"""``pyctr run`` in the foreground without grpc, asyncio or the generated protobuf modules.

Importing those costs several times what ``run --rm IMG true`` spends talking to the
daemon, so this path speaks gRPC through ``h2.Channel`` (one HTTP/2 connection, messages
encoded by ``wire``) and does its I/O in one ``select`` loop.  It makes what ``client.run``
makes (the same container record, spec, lease, FIFOs, exit code, signal forwarding, stdin
EOF passed on, ``--rm`` cleanup), with fewer round trips, independent calls sharing one:

1. Containers.Get (the id must be free) + Images.Get + Namespaces.Get (default snapshotter);
2. Content.Read of the manifest (of the index first, when the image is one), then the config;
3. Snapshots.Stat of the image's top layer + Leases.Create;
4. Snapshots.Prepare under the lease; the rootfs mounted read-only to read /etc/passwd and
   /etc/group (as ctr does), the spec built (``oci.spec``); Containers.Create under the lease;
5. Leases.Delete + Tasks.Create (with Prepare's mounts: Snapshots.Mounts would answer the same);
6. Tasks.Wait + Tasks.Start; stdio copied and signals forwarded until Wait answers, output
   drained; Tasks.Delete; with ``--rm``: Snapshots.Remove + Containers.Delete.

``run`` answers ``None`` -- before it has made anything -- whenever the full client should
do the work instead: the id is taken or the image is not found under that exact name (the
full client's messages and short-name lookup), the image is not unpacked (it unpacks), or
an index has no manifest for this platform.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import errdefs
from . import imagewalk, wire
from .h2 import Channel

if TYPE_CHECKING:
    from ..oci.spec import RootfsFiles, RunOptions

SVC = "/containerd.services."
CONTAINERS_GET, CONTAINERS_CREATE, CONTAINERS_DELETE = (
    SVC + "containers.v1.Containers/Get", SVC + "containers.v1.Containers/Create",
    SVC + "containers.v1.Containers/Delete")
IMAGES_GET = SVC + "images.v1.Images/Get"
NAMESPACES_GET = SVC + "namespaces.v1.Namespaces/Get"
CONTENT_READ = SVC + "content.v1.Content/Read"
SNAPSHOTS_STAT, SNAPSHOTS_PREPARE, SNAPSHOTS_REMOVE = (
    SVC + "snapshots.v1.Snapshots/Stat", SVC + "snapshots.v1.Snapshots/Prepare", SVC + "snapshots.v1.Snapshots/Remove")
LEASES_CREATE, LEASES_DELETE = SVC + "leases.v1.Leases/Create", SVC + "leases.v1.Leases/Delete"
TASKS = SVC + "tasks.v1.Tasks/"

DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
RUNC_RUNTIME = "io.containerd.runc.v2"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
DRAIN_GRACE = 30.0
_BLOB_LIMIT = 16 << 20

__all__ = ["run"]


def _read_blob(ch: Channel, digest: str) -> bytes:
    msgs = ch.result(ch.start(CONTENT_READ, wire.string(1, digest)))
    data = b"".join(wire.get_bytes(wire.fields(m), 2) for m in msgs)
    if len(data) > _BLOB_LIMIT:
        raise errdefs.ResourceExhausted(f"blob {digest} is larger than {_BLOB_LIMIT} bytes")
    return data


def _image_config(ch: Channel, digest: str, media_type: str) -> dict[str, Any] | None:
    """The image config (manifest found through any index for this platform), or None."""
    want = imagewalk.host_platform()
    for _ in range(imagewalk.MAX_DEPTH):
        doc = json.loads(_read_blob(ch, digest))
        if not imagewalk.is_index(doc, media_type):
            config: dict[str, Any] = json.loads(_read_blob(ch, doc["config"]["digest"]))
            return config
        found = imagewalk.pick_manifest(doc, want)
        if found is None:
            return None
        digest, media_type = found
    return None


def _mount_pb(m: Mapping[str, Any]) -> bytes:
    return (wire.string(1, m["type"]) + wire.string(2, m["source"]) + wire.string(3, m.get("target", ""))
            + wire.repeated(4, m["options"]))


def _single_root(mounts: list[dict[str, Any]]) -> str | None:
    """The one directory a rootfs mount would show, when there is one: a bind mount's source,
    or an overlay whose only lower layer is all there is (its upper dir still empty, as right
    after Prepare).  Reading there is reading the mounted view, without mounting."""
    if len(mounts) != 1 or mounts[0].get("target"):
        return None
    m = mounts[0]
    if m["type"] == "bind" or "bind" in m["options"] or "rbind" in m["options"]:
        return str(m["source"])
    if m["type"] != "overlay":
        return None
    opts: dict[str, str] = {}
    for o in m["options"]:
        key, _, value = o.partition("=")
        opts[key] = value
    lowers = [d for d in opts.get("lowerdir", "").split(":") if d]
    upper = opts.get("upperdir")
    if len(lowers) != 1:
        return None
    if upper:
        try:
            with os.scandir(upper) as it:
                if any(True for _ in it):
                    return None
        except OSError:
            return None
    return lowers[0]


def _rootfs_files(mounts: list[dict[str, Any]]) -> RootfsFiles:
    """The rootfs' /etc/passwd and /etc/group, as ctr reads them (through a read-only mount)."""
    from ..oci.spec import RootfsFiles
    from .rootfs import read_in_root

    root = _single_root(mounts)
    if root is not None:
        return RootfsFiles(read_in_root(root, "/etc/passwd"), read_in_root(root, "/etc/group"))
    from ..mount import Mount, read_only, temp_mount

    ms = [Mount(m["type"], m["source"], list(m["options"]), m.get("target", "")) for m in mounts]
    try:
        with temp_mount(read_only(ms)) as root:
            return RootfsFiles(read_in_root(root, "/etc/passwd"), read_in_root(root, "/etc/group"))
    except OSError as exc:
        raise errdefs.from_oserror(exc, "mount the container's rootfs to read /etc/passwd") from exc


class _Fifos:
    """``<base>/<random>/<id>-stdin|-stdout|-stderr`` like cio.FifoSet, opened like cio.Attach."""

    def __init__(self, base: str, process_id: str) -> None:
        os.makedirs(base, mode=0o700, exist_ok=True)
        for _ in range(100):
            d = os.path.join(base, os.urandom(5).hex())
            try:
                os.mkdir(d, 0o700)
                break
            except FileExistsError:
                continue
        self.dir = d
        self.paths = {n: os.path.join(d, f"{process_id}-{n}") for n in ("stdin", "stdout", "stderr")}
        self.readers: dict[int, int] = {}  # fifo read fd -> our fd
        self.keepalive: list[int] = []
        self.stdin_fifo: int | None = None
        try:
            for p in self.paths.values():
                os.mkfifo(p, 0o700)
            for name, out in (("stdout", 1), ("stderr", 2)):
                rfd = os.open(self.paths[name], os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                self.readers[rfd] = out
                self.keepalive.append(os.open(self.paths[name], os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            self.stdin_fifo = os.open(self.paths["stdin"], os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def started(self) -> None:
        for fd in self.keepalive:
            os.close(fd)
        self.keepalive.clear()

    def close_stdin(self) -> None:
        if self.stdin_fifo is not None:
            os.close(self.stdin_fifo)
            self.stdin_fifo = None

    def close(self) -> None:
        for fd in [*self.readers, *self.keepalive]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.readers.clear()
        self.keepalive.clear()
        self.close_stdin()
        for p in self.paths.values():
            try:
                os.unlink(p)
            except OSError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)
        except (BrokenPipeError, OSError):
            return


class _Session:
    """The foreground process's stdio and signals, driven by ``Channel.pump``."""

    def __init__(self, ch: Channel, container_id: str, fifos: _Fifos | None) -> None:
        self.ch, self.container_id, self.fifos = ch, container_id, fifos
        self.stdin_open = fifos is not None and fifos.stdin_fifo is not None
        self.pending = b""  # read from our stdin, not yet in the FIFO
        self._wake_r = self._wake_w = -1
        self._old: dict[int, Any] = {}
        self._old_wakeup = -1

    def forward_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in FORWARDED_SIGNALS:
            self._old[sig] = signal.signal(sig, _noop)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def restore_signals(self) -> None:
        if self._wake_r < 0:
            return
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        self._forward()  # the ones that came in meanwhile
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    def _forward(self) -> None:
        try:
            sigs = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for sig in sigs:
            self.ch.start(TASKS + "Kill", wire.string(1, self.container_id) + wire.uint(3, sig))

    def run_until(self, sid: int | None, deadline: float | None = None) -> None:
        """Copy stdio and forward signals until call ``sid`` is answered (None: until the
        output reached EOF) or ``deadline`` (monotonic) passes."""
        f = self.fifos
        while True:
            if sid is not None and self.ch.done(sid):
                return
            if sid is None and (f is None or not f.readers):
                return
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            rfds: list[int] = list(f.readers) if f is not None else []
            wfds: list[int] = []
            if self._wake_r >= 0:
                rfds.append(self._wake_r)
            if self.stdin_open and f is not None:
                if self.pending:
                    wfds.append(f.stdin_fifo)  # type: ignore[arg-type]
                else:
                    rfds.append(0)
            readable, writable = self.ch.pump(rfds, wfds, timeout)
            for fd in readable:
                if fd == self._wake_r:
                    self._forward()
                elif fd == 0:
                    self._read_stdin()
                elif f is not None and fd in f.readers:
                    self._copy_out(fd)
            if writable:
                self._write_stdin()

    def _copy_out(self, rfd: int) -> None:
        assert self.fifos is not None
        try:
            data = os.read(rfd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            _write_all(self.fifos.readers[rfd], data)
            return
        del self.fifos.readers[rfd]
        os.close(rfd)

    def _read_stdin(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: let go of our end and close the process's stdin
            self.stdin_open = False
            assert self.fifos is not None
            self.fifos.close_stdin()
            self.ch.start(TASKS + "CloseIO", wire.string(1, self.container_id) + wire.boolean(3, True))
            return
        self.pending = data
        self._write_stdin()

    def _write_stdin(self) -> None:
        assert self.fifos is not None
        fd = self.fifos.stdin_fifo
        if fd is None:
            self.pending = b""
            return
        try:
            n = os.write(fd, self.pending)
            self.pending = self.pending[n:]
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise
            self.pending, self.stdin_open = b"", False


def _noop(signum: int, frame: object) -> None:
    """Signal handler while forwarding: the wakeup fd carries the signal to the loop."""


def run(address: str, namespace: str, image_ref: str, container_id: str, opts: Callable[[], RunOptions], *,
        snapshotter: str = "", runtime: str = RUNC_RUNTIME, container_labels: Mapping[str, str] | None = None,
        snapshot_labels: Mapping[str, str] | None = None, fifo_dir: str, io: tuple[str, str] | None = None,
        rm: bool = False, connect_timeout: float = 10.0) -> int | None:
    """Run the container in the foreground; its exit code, or None (nothing made) for the full client.

    ``opts`` makes the spec options: it is called (importing the spec builder) while the daemon
    answers the first calls.

    ``io``: None for our stdio through FIFOs, else ``(stdout, stderr)`` URIs (``--log-uri``)
    or ``("", "")`` (``--null-io``)."""
    ch = Channel(address, namespace, connect_timeout)
    try:
        made = _create(ch, namespace, image_ref, container_id, opts, snapshotter=snapshotter, runtime=runtime,
                       container_labels=container_labels or {}, snapshot_labels=snapshot_labels or {})
        if made is None:
            return None
        sn_name, mounts = made
        return _run_task(ch, container_id, sn_name, mounts, fifo_dir=fifo_dir, io=io, rm=rm)
    finally:
        try:
            ch.settle()  # the calls nobody waited for (Leases.Delete, Kill, CloseIO) are answered
        finally:
            ch.close()


def _create(ch: Channel, namespace: str, image_ref: str, container_id: str, make_opts: Callable[[], RunOptions], *,
            snapshotter: str, runtime: str, container_labels: Mapping[str, str],
            snapshot_labels: Mapping[str, str]) -> tuple[str, list[dict[str, Any]]] | None:
    c_sid = ch.start(CONTAINERS_GET, wire.string(1, container_id))
    i_sid = ch.start(IMAGES_GET, wire.string(1, image_ref))
    n_sid = None if snapshotter else ch.start(NAMESPACES_GET, wire.string(1, namespace))
    ch.flush()
    opts = make_opts()  # meanwhile
    from ..oci.spec import HostInfo, build_run_spec, image_labels

    try:
        ch.result(c_sid)
        return None  # taken: the full client says so in its words
    except errdefs.NotFound:
        pass
    try:
        image = wire.get_msgs(wire.fields(ch.result(i_sid)[0]), 1)[0]
    except (errdefs.NotFound, IndexError):
        return None  # maybe a short name: the full client normalizes it
    if n_sid is not None:
        ns = wire.get_msgs(wire.fields(ch.result(n_sid)[0]), 1)
        snapshotter = (wire.get_map(ns[0], 2).get(DEFAULT_SNAPSHOTTER_LABEL) if ns else "") or "overlayfs"
    image_name = wire.get_str(image, 1)
    target = (wire.get_msgs(image, 3) or [{}])[0]
    config = _image_config(ch, wire.get_str(target, 2), wire.get_str(target, 1))
    diff_ids = list(((config or {}).get("rootfs") or {}).get("diff_ids") or [])
    if config is None or not diff_ids:
        return None
    chain = imagewalk.chain_id(diff_ids)

    lease = f"pyctr-{os.urandom(8).hex()}"
    expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 24 * 3600))
    s_sid = ch.start(SNAPSHOTS_STAT, wire.string(1, snapshotter) + wire.string(2, chain))
    l_sid = ch.start(LEASES_CREATE, wire.string(1, lease) + wire.fmap(3, {"containerd.io/gc.expire": expire}))
    ch.result(l_sid)
    try:
        try:
            ch.result(s_sid)
        except errdefs.NotFound:
            return None  # not unpacked: the full client unpacks
        try:
            prep = ch.call(SNAPSHOTS_PREPARE, wire.string(1, snapshotter) + wire.string(2, container_id)
                           + wire.string(3, chain) + wire.fmap(4, snapshot_labels), lease=lease)
        except errdefs.AlreadyExists:
            return None  # a snapshot left with that name: the full client explains
        mounts = [{"type": wire.get_str(m, 1), "source": wire.get_str(m, 2), "target": wire.get_str(m, 3),
                   "options": wire.get_strs(m, 4)} for m in wire.get_msgs(wire.fields(prep), 1)]
        try:
            files = _rootfs_files(mounts)
            host = HostInfo.probe() if opts.needs_host else None
            spec = build_run_spec(namespace, container_id, config, opts, files, host)
            labels = image_labels(config)
            stop_signal = labels.pop("io.containerd.image.config.stop-signal")
            labels.update(wire.get_map(image, 2))
            labels.update(container_labels)
            labels["io.containerd.image.config.stop-signal"] = stop_signal
            rt = wire.string(1, runtime)
            if runtime == RUNC_RUNTIME:  # ctr's default runc options: all fields unset
                rt += wire.message(2, wire.string(1, RUNC_OPTIONS_TYPE_URL))
            spec_any = wire.string(1, SPEC_TYPE_URL) + wire.string(2, json.dumps(spec, separators=(",", ":")))
            record = (wire.string(1, container_id) + wire.fmap(2, labels) + wire.string(3, image_name)
                      + wire.message(4, rt) + wire.message(5, spec_any) + wire.string(6, snapshotter)
                      + wire.string(7, container_id))
            ch.call(CONTAINERS_CREATE, wire.message(1, record), lease=lease)
        except BaseException:
            try:
                ch.call(SNAPSHOTS_REMOVE, wire.string(1, snapshotter) + wire.string(2, container_id))
            except errdefs.ContainerdError:
                pass
            raise
        return snapshotter, mounts
    finally:
        ch.start(LEASES_DELETE, wire.string(1, lease))  # answered while the next call is made


def _run_task(ch: Channel, container_id: str, snapshotter: str, mounts: list[dict[str, Any]], *,
              fifo_dir: str, io: tuple[str, str] | None, rm: bool) -> int:
    cid = wire.string(1, container_id)
    fifos: _Fifos | None = None
    session: _Session | None = None
    task = False
    try:
        if io is None:
            fifos = _Fifos(fifo_dir, container_id)
            paths = (fifos.paths["stdin"], fifos.paths["stdout"], fifos.paths["stderr"])
        else:
            paths = ("", io[0], io[1])
        req = cid + b"".join(wire.message(3, _mount_pb(m)) for m in mounts)
        req += wire.string(4, paths[0]) + wire.string(5, paths[1]) + wire.string(6, paths[2])
        task = True  # from here on, maybe (an interrupted Create): --rm asks before deleting
        ch.call(TASKS + "Create", req)
        session = _Session(ch, container_id, fifos)
        wait_sid = ch.start(TASKS + "Wait", cid)
        session.forward_signals()
        try:
            ch.call(TASKS + "Start", cid)
        except BaseException:
            ch.cancel(wait_sid)
            try:
                ch.call(TASKS + "Delete", cid)
                task = False
            except errdefs.ContainerdError:
                pass
            raise
        if fifos is not None:
            fifos.started()
        session.run_until(wait_sid)
        code = wire.get_uint(wire.fields(ch.result(wait_sid)[0]), 1)
        session.run_until(None, time.monotonic() + DRAIN_GRACE)
        session.restore_signals()
        try:
            ch.call(TASKS + "Delete", cid)
        except errdefs.NotFound:
            pass
        task = False
        return code
    finally:
        if session is not None:
            session.restore_signals()
        if fifos is not None:
            fifos.close()
        if rm:
            _remove(ch, container_id, snapshotter, task)


def _remove(ch: Channel, container_id: str, snapshotter: str, task: bool) -> None:
    """``containers rm`` of the container we made (``client.run.delete_container``)."""
    cid = wire.string(1, container_id)
    if task:
        try:
            proc = wire.get_msgs(wire.fields(ch.call(TASKS + "Get", cid)), 1)
        except errdefs.NotFound:
            proc = []
        if proc:
            status = wire.get_uint(proc[0], 4)
            if status not in (1, 3):  # created, stopped
                raise errdefs.FailedPrecondition(
                    f"cannot delete a non stopped container {container_id}: kill it first (pyctr tasks kill) "
                    "or use --force")
            try:
                ch.call(TASKS + "Delete", cid)
            except errdefs.NotFound:
                pass
    r_sid = ch.start(SNAPSHOTS_REMOVE, wire.string(1, snapshotter) + wire.string(2, container_id))
    d_sid = ch.start(CONTAINERS_DELETE, cid)
    try:
        ch.result(r_sid)
    except errdefs.NotFound:
        pass
    try:
        ch.result(d_sid)
    except errdefs.NotFound:
        pass
