"""What ``ctr run`` does, as a library: image → container record → task → exit code.

``new_container`` follows ctr 1.6's NewContainer: Images.Get, check the image is unpacked
(stat of the top chain ID snapshot; unpack through client/pull.py when that is available),
take a lease, Snapshots.Prepare(key=ID, parent=chainID), read /etc/passwd and /etc/group
through a read-only temp mount of that snapshot, build the spec (oci/spec.py),
Containers.Create, drop the lease.

``run_task`` follows ctr's task half: FIFOs, Tasks.Create, Wait before Start, copy stdio,
forward signals (or a raw tty with ResizePty on SIGWINCH), Delete, and with ``rm`` delete
the container and its snapshot; it returns the exit code.  ``exec_process`` is the same for
``tasks exec`` and ``delete_container`` is ``ctr containers rm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import secrets
import signal
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import errdefs, timestamps
from ..api.services.content.v1 import content_pb2
from ..api.services.images.v1 import images_pb2
from ..api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from ..mount import Mount, read_only, temp_mount
from ..oci.spec import HostInfo, RootfsFiles, RunOptions, build_run_spec, image_labels, process_spec
from . import LOG_URI_LABEL, imagewalk
from .cio import FIFO_DIR, FORWARDED_SIGNALS, Attach, FifoSet, IOConfig, RawTerminal, log_uri_config, terminal_size
from .containers import DEFAULT_RUNTIME, Container, runc_options
from .imagewalk import MAX_DEPTH, chain_id, host_platform
from .network import ContainerNetwork, release_attachment, setup_network, teardown_network
from .rootfs import read_in_root

if TYPE_CHECKING:
    from .core import Client

GC_EXPIRE_LABEL = "containerd.io/gc.expire"
_LEASES_STUB: Any = leases_pb2_grpc.LeasesStub

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")

__all__ = ["LOG_URI_LABEL", "ImageInfo", "delete_container", "exec_process", "new_container", "release_network",
           "resolve_image", "run_task"]


# -- images ----------------------------------------------------------------------------------
@dataclass
class ImageInfo:
    name: str
    labels: dict[str, str]
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    diff_ids: list[str]

    @property
    def chain_id(self) -> str:
        return chain_id(self.diff_ids)


async def read_blob(client: Client, digest: str, limit: int = 16 << 20) -> bytes:
    stub = client.content.raw
    chunks: list[bytes] = []
    total = 0
    async for resp in client.stream(stub.Read, content_pb2.ReadContentRequest(digest=digest)):
        chunks.append(resp.data)
        total += len(resp.data)
        if total > limit:
            raise errdefs.ResourceExhausted(f"blob {digest} is larger than {limit} bytes")
    return b"".join(chunks)


async def resolve_image(client: Client, ref: str) -> ImageInfo:
    """Images.Get + read the manifest (for this platform) and config from the content store."""
    try:
        resp = await client.unary(client.images.raw.Get, images_pb2.GetImageRequest(name=ref))
    except errdefs.NotFound:
        # a short name (busybox, library/busybox:1) means what pull made of it (docker.io/library/...)
        from ..images.reference import normalize

        try:
            full = normalize(ref)
        except errdefs.InvalidArgument:
            full = ref
        if full == ref:
            raise errdefs.NotFound(f"image {ref} not found: pull it first (pyctr images pull {ref})") from None
        try:
            resp = await client.unary(client.images.raw.Get, images_pb2.GetImageRequest(name=full))
        except errdefs.NotFound:
            raise errdefs.NotFound(f"image {ref} ({full}) not found: pull it first "
                                   f"(pyctr images pull {ref})") from None
    img = resp.image
    media_type, digest = img.target.media_type, img.target.digest
    want = host_platform()
    for _ in range(MAX_DEPTH):
        doc = json.loads(await read_blob(client, digest))
        if imagewalk.is_index(doc, media_type):
            found = imagewalk.pick_manifest(doc, want)
            if found is None:
                raise errdefs.NotFound(f"image {ref}: no manifest for platform {want[0]}/{want[1]}")
            digest, media_type = found
            continue
        config_digest = doc["config"]["digest"]
        config = json.loads(await read_blob(client, config_digest))
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        return ImageInfo(img.name, dict(img.labels), digest, config_digest, config, diff_ids)
    raise errdefs.InvalidArgument(f"image {ref}: index nesting too deep")


async def ensure_unpacked(client: Client, image: ImageInfo, snapshotter: str) -> None:
    """Make sure the image's top snapshot exists; unpack via client/pull.py if it can, else fail clearly."""
    sn = client.snapshots.snapshotter(snapshotter)
    try:
        await sn.stat(image.chain_id)
        return
    except errdefs.NotFound:
        pass
    try:
        pull: Any = importlib.import_module(f"{__package__}.pull")  # client/pull.py, when present
    except ImportError:
        pull = None
    unpack = getattr(pull, "unpack", None)
    if unpack is None:
        raise errdefs.NotFound(f"image {image.name} is not unpacked in snapshotter {snapshotter}: "
                               f"run `pyctr images pull {image.name}` (or ctr images unpack) first")
    await unpack(client, image.name, snapshotter=snapshotter)


# -- leases ----------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def temporary_lease(client: Client) -> AsyncIterator[Client]:
    """A lease that keeps what we create alive until the container record references it."""
    stub: Any = _LEASES_STUB(client.channel)
    lease_id = f"pyctr-{secrets.token_hex(8)}"
    expire = timestamps.format_seconds(datetime.now(UTC) + timedelta(hours=24))
    await client.unary(stub.Create, leases_pb2.CreateRequest(id=lease_id, labels={GC_EXPIRE_LABEL: expire}))
    try:
        yield client.with_lease(lease_id)
    finally:
        with contextlib.suppress(errdefs.ContainerdError):
            await client.with_lease(None).unary(stub.Delete, leases_pb2.DeleteRequest(id=lease_id))


# -- reading the rootfs ----------------------------------------------------------------------
def _read_user_files(mounts: Sequence[Mount]) -> RootfsFiles:
    with temp_mount(read_only(mounts)) as root:
        return RootfsFiles(read_in_root(root, "/etc/passwd"), read_in_root(root, "/etc/group"))


async def rootfs_files(mounts: Sequence[Mount]) -> RootfsFiles:
    try:
        return await asyncio.to_thread(_read_user_files, mounts)
    except OSError as exc:
        raise errdefs.from_oserror(exc, "mount the container's rootfs to read /etc/passwd") from exc


# -- containers ------------------------------------------------------------------------------
async def new_container(client: Client, image_ref: str, container_id: str, opts: RunOptions, *,
                        snapshotter: str = "", runtime: str = DEFAULT_RUNTIME,
                        container_labels: Mapping[str, str] | None = None,
                        snapshot_labels: Mapping[str, str] | None = None) -> Container:
    """Create the container record (and its rootfs snapshot) exactly as ``ctr run``/``ctr c create`` do."""
    try:
        await client.containers.get(container_id)
    except errdefs.NotFound:
        pass
    else:
        raise errdefs.AlreadyExists(f"container {container_id} already exists: pick another id, "
                                    f"or remove it first (pyctr containers rm {container_id})")
    image = await resolve_image(client, image_ref)
    sn_name = snapshotter or await client.snapshots.default_name()
    await ensure_unpacked(client, image, sn_name)
    async with temporary_lease(client) as leased:
        sn = leased.snapshots.snapshotter(sn_name)
        try:
            mounts = await sn.prepare(container_id, image.chain_id, snapshot_labels)
        except errdefs.AlreadyExists:
            raise errdefs.AlreadyExists(
                f"container {container_id}: a snapshot named {container_id} already exists in snapshotter "
                f"{sn_name} (left by an earlier container?): remove it (pyctr snapshots --snapshotter {sn_name} "
                f"rm {container_id}) or pick another id") from None
        try:
            files = await rootfs_files(mounts)
            host = await asyncio.to_thread(HostInfo.probe) if opts.needs_host else None
            spec = build_run_spec(client.namespace, container_id, image.config, opts, files, host)
            labels = {k: v for k, v in image_labels(image.config).items()}
            stop_signal = labels.pop("io.containerd.image.config.stop-signal")
            labels.update(image.labels)
            labels.update(container_labels or {})
            labels["io.containerd.image.config.stop-signal"] = stop_signal
            container = Container(
                id=container_id, image=image.name, labels=labels, runtime=runtime,
                runtime_options=runc_options() if runtime == DEFAULT_RUNTIME else None, spec=spec,
                snapshotter=sn_name, snapshot_key=container_id,
            )
            return await leased.containers.create(container)
        except BaseException:
            with contextlib.suppress(errdefs.ContainerdError):
                await sn.remove(container_id)
            raise


async def delete_container(client: Client, container_id: str, *, keep_snapshot: bool = False) -> None:
    """``ctr containers rm``: delete a stopped task first; refuse while it runs."""
    try:
        proc = await client.tasks.get(container_id)
    except errdefs.NotFound:
        proc = None
    if proc is not None:
        if proc.status not in ("stopped", "created"):
            raise errdefs.FailedPrecondition(
                f"cannot delete a non stopped container {container_id} (task is {proc.status}): "
                "kill it first (pyctr tasks kill) or use --force")
        with contextlib.suppress(errdefs.NotFound):
            await client.tasks.delete(container_id)
    container = await client.containers.get(container_id)
    # CNI DEL before the record (and its label saying what to delete) goes: a failure leaves
    # the container for another try
    await teardown_network(client.namespace, container_id, container.labels)
    if not keep_snapshot and container.snapshotter and container.snapshot_key:
        with contextlib.suppress(errdefs.NotFound):
            await client.snapshots.snapshotter(container.snapshotter).remove(container.snapshot_key)
    await client.containers.delete(container_id)


async def release_network(client: Client, container_id: str) -> bool:
    """CNI DEL for a container started with ``run --cni`` once its task is deleted (idempotent);
    False if the container has no CNI attachment (or is gone)."""
    try:
        container = await client.containers.get(container_id)
    except errdefs.NotFound:
        return False
    return await teardown_network(client.namespace, container_id, container.labels)


# -- tasks -----------------------------------------------------------------------------------
@dataclass
class Stdio:
    stdin: int | None = 0
    stdout: int = 1
    stderr: int = 2


@dataclass
class TaskIO:
    tty: bool = False
    detach: bool = False
    null_io: bool = False
    log_uri: str = ""
    stdio: Stdio = field(default_factory=Stdio)
    fifo_dir: str = ""  # where the stdio FIFOs are made (default cio.FIFO_DIR)


class _Session:
    """The attached half of a foreground process: FIFOs, copying, signals, tty size."""

    def __init__(self, client: Client, container_id: str, exec_id: str, tio: TaskIO) -> None:
        self.client, self.container_id, self.exec_id, self.tio = client, container_id, exec_id, tio
        self.fifos: FifoSet | None = None
        self.attach: Attach | None = None
        self._raw: RawTerminal | None = None
        self._signals: list[int] = []
        self._background: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def open(self) -> IOConfig:
        if self.tio.log_uri:
            return log_uri_config(self.tio.log_uri)
        if self.tio.detach or self.tio.null_io:
            return IOConfig(terminal=self.tio.tty)
        self.fifos = await asyncio.to_thread(FifoSet.create, self.exec_id or self.container_id,
                                             terminal=self.tio.tty, base=self.tio.fifo_dir or FIFO_DIR)
        self.attach = Attach(self.fifos, stdin_fd=self.tio.stdio.stdin, stdout_fd=self.tio.stdio.stdout,
                             stderr_fd=self.tio.stdio.stderr, close_stdin=self._close_stdin)
        await self.attach.open()
        return self.fifos.config

    async def _close_stdin(self) -> None:
        await self.client.tasks.close_io(self.container_id, self.exec_id, stdin=True)

    async def _resize(self) -> None:
        size = terminal_size(self.tio.stdio.stdout)
        if size:
            with contextlib.suppress(errdefs.ContainerdError):
                await self.client.tasks.resize_pty(self.container_id, size[0], size[1], self.exec_id)

    def forward_signals(self) -> None:
        """Pass our signals on to the process (not with a tty: there the terminal sends them)."""
        if self.tio.tty or self.tio.detach:
            return
        loop = asyncio.get_running_loop()
        for sig in FORWARDED_SIGNALS:
            loop.add_signal_handler(sig, self._forward, sig)
            self._signals.append(sig)

    def started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.attach is not None:
            self.attach.started()
        if self.tio.tty and self.attach is not None:
            stdin = self.tio.stdio.stdin
            if stdin is not None:
                self._raw = RawTerminal(stdin)
                self._raw.__enter__()
            self._spawn(self._resize())
            loop.add_signal_handler(signal.SIGWINCH, lambda: self._spawn(self._resize()))
            self._signals.append(signal.SIGWINCH)

    def _forward(self, sig: int) -> None:
        async def kill() -> None:
            with contextlib.suppress(errdefs.ContainerdError):
                await self.client.tasks.kill(self.container_id, sig, exec_id=self.exec_id)
        self._spawn(kill())

    async def drain(self) -> None:
        if self.attach is not None:
            await self.attach.wait(grace=30)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        if self._raw is not None:
            self._raw.__exit__(None, None, None)
            self._raw = None
        if self.attach is not None:
            self.attach.close()
            self.attach = None
        if self.fifos is not None:
            self.fifos.remove()
            self.fifos = None


async def run_task(client: Client, container: Container, tio: TaskIO, *, rm: bool = False,
                   network: ContainerNetwork | None = None) -> int:
    """Start the container's task and, unless detached, wait for it; returns the exit code.

    With ``network`` (``run --cni``) the created task's network namespace is ADDed to the CNI
    networks before it starts, and DELeted when the task is deleted here."""
    session = _Session(client, container.id, "", tio)
    networked = False
    try:
        io = await session.open()
        sn = client.snapshots.snapshotter(container.snapshotter)
        rootfs = await sn.mounts(container.snapshot_key) if container.snapshot_key else []
        pid = await client.tasks.create(container.id, rootfs, io)
        if network is not None:
            networked = True
            try:
                await setup_network(client.namespace, container.id, pid, network)
            except BaseException:
                with contextlib.suppress(errdefs.ContainerdError):
                    await client.tasks.delete(container.id)
                raise
        if tio.detach:
            await client.tasks.start(container.id)
            return 0
        waiter = asyncio.create_task(client.tasks.wait(container.id))
        session.forward_signals()
        try:
            await client.tasks.start(container.id)
        except BaseException:
            waiter.cancel()
            with contextlib.suppress(errdefs.ContainerdError):
                await client.tasks.delete(container.id)
            raise
        session.started()
        status = await waiter
        await session.drain()
        session.close()
        with contextlib.suppress(errdefs.NotFound):
            await client.tasks.delete(container.id)
        return status.code
    finally:
        session.close()
        if networked and not tio.detach and not rm and network is not None:  # (with rm: delete_container)
            await asyncio.shield(release_attachment(client.namespace, container.id, network))
        if rm and not tio.detach:
            with contextlib.suppress(errdefs.NotFound):
                await delete_container(client, container.id)


async def exec_process(client: Client, container_id: str, exec_id: str, args: Sequence[str], tio: TaskIO, *,
                       cwd: str = "", env: Sequence[str] = (), user: str = "") -> int:
    """``ctr tasks exec``: run another process in a running task; returns its exit code."""
    if not exec_id:
        raise errdefs.InvalidArgument("exec id must be provided (--exec-id)")
    container = await client.containers.get(container_id)
    await client.tasks.get(container_id)  # the task must exist
    files = RootfsFiles()
    if user and container.snapshot_key and not all(p.isdigit() for p in user.split(":")):
        mounts = await client.snapshots.snapshotter(container.snapshotter).mounts(container.snapshot_key)
        files = await rootfs_files(mounts)
    proc = process_spec(container.spec or {}, args, tty=tio.tty, cwd=cwd, env=env, user=user, files=files)
    session = _Session(client, container_id, exec_id, tio)
    try:
        io = await session.open()
        await client.tasks.exec(container_id, exec_id, proc, io)
        waiter = asyncio.create_task(client.tasks.wait(container_id, exec_id))
        session.forward_signals()
        try:
            await client.tasks.start(container_id, exec_id)
        except BaseException:
            waiter.cancel()
            with contextlib.suppress(errdefs.ContainerdError):
                await client.tasks.delete_process(container_id, exec_id)
            raise
        if tio.detach:
            waiter.cancel()
            return 0
        session.started()
        status = await waiter
        await session.drain()
        with contextlib.suppress(errdefs.NotFound):
            await client.tasks.delete_process(container_id, exec_id)
        return status.code
    finally:
        session.close()
