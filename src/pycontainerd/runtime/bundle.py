"""OCI bundles: ``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/``.

A bundle holds ``config.json`` (the container's spec, as runc reads it), ``rootfs/`` (the
mount point the shim mounts the rootfs on) and ``daemon-task.json``: what the daemon needs
to clean the task up if its shim is gone after a restart (the runtime binary and root, the
runtime name, the init pid once known).  Files are written atomically (temp, rename) so a
``kill -9`` of the daemon never leaves half a bundle file behind.  They are not fsync'ed: the
bundle is runtime state (containerd keeps it on tmpfs, ``/run``) and means nothing after a
reboot, while a crashed process loses nothing that reached the page cache.

A bundle directory is ``0700``: a running container's root filesystem is mounted on
``rootfs/``, and any user who can reach it could run a setuid binary of the image there and
become root (CVE-2021-41103).  The layout is containerd's: the runtime's directory and the
namespace directories above the bundles are ``0711`` (others may pass, not list), because a
container in a user namespace needs its mapped root to reach ``rootfs/`` (runc mounts it
from inside the namespace): its bundle is ``0710`` with the group of that mapped root.
``rootfs/`` itself is ``0711``: with no rootfs mounts it is the container's ``/``, which the
container's user (maybe not root) must be able to enter; the bundle keeps others out.
``close_existing`` gives bundles an older version made ``0711`` these modes.

The spec is checked and adjusted here, before runc sees it:

- it must be a JSON object (InvalidArgument otherwise);
- ``process.oomScoreAdj`` below the daemon's own score is raised to it (restrict_oom_score_adj:
  an unprivileged, or already-adjusted, daemon cannot lower a child's score and runc fails);
- with no rootfs mounts, ``root.path`` must name an existing directory, otherwise the
  container would start on an empty directory (FailedPrecondition naming the path).

Everything here blocks (file I/O, unmount): call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import errdefs, fsmodes, identifiers
from .. import mount as mountpkg

CONFIG = "config.json"
META = "daemon-task.json"
ROOTFS = "rootfs"
ROOTFS_MODE = 0o711  # inside the 0700 bundle: see the module docstring
USERNS_BUNDLE_MODE = 0o710  # group: the host gid of a user-namespaced container's root


@dataclass
class BundleMeta:
    namespace: str
    id: str
    runtime_name: str
    binary_name: str = "runc"
    runtime_root: str = ""
    systemd_cgroup: bool = False
    cgroups_path: str = ""
    pid: int = 0
    shim_pid: int = 0
    shim_address: str = ""
    # when the init's start returned (wall clock ns; 0: not started): what ``started_at`` reports,
    # kept here so a restarted daemon reports the same time
    started_at_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleMeta:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Whole or not at all (temp + rename); not flushed to disk (runtime state, see above)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def parse_spec(value: bytes, what: str = "container spec") -> dict[str, Any]:
    try:
        spec = json.loads(value.decode("utf-8") if value else "")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errdefs.InvalidArgument(f"invalid {what}: not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise errdefs.InvalidArgument(f"invalid {what}: expected a JSON object, got {type(spec).__name__}")
    return spec


def own_oom_score_adj(proc: Path = Path("/proc/self/oom_score_adj")) -> int:
    try:
        return int(proc.read_text().strip())
    except (OSError, ValueError):
        return 0


def adjust_spec(spec: dict[str, Any], *, min_oom_score_adj: int | None) -> dict[str, Any]:
    """``spec`` with the daemon's policy applied (pure): ``spec`` itself when the policy changes
    nothing (the caller may then write the bytes it parsed ``spec`` from), else a copy of what
    changes (``spec`` and its ``process``; the rest shared, never modified)."""
    process = spec.get("process")
    if min_oom_score_adj is not None and isinstance(process, dict):
        adj = process.get("oomScoreAdj")
        if isinstance(adj, int) and adj < min_oom_score_adj:
            return {**spec, "process": {**process, "oomScoreAdj": min_oom_score_adj}}
    return spec


def cgroups_path_of(spec: dict[str, Any]) -> str:
    linux = spec.get("linux")
    if isinstance(linux, dict):
        value = linux.get("cgroupsPath", "")
        return value if isinstance(value, str) else ""
    return ""


def check_root(spec: dict[str, Any], bundle: Path, have_rootfs_mounts: bool) -> None:
    root = spec.get("root")
    path = root.get("path", "") if isinstance(root, dict) else ""
    if not isinstance(path, str):
        raise errdefs.InvalidArgument("invalid container spec: root.path must be a string")
    if have_rootfs_mounts:
        return
    if not path:
        raise errdefs.InvalidArgument(
            "container has no rootfs: the task request carries no rootfs mounts (is the snapshot missing?) "
            "and the spec's root.path is empty"
        )
    target = Path(path) if os.path.isabs(path) else bundle / path
    if not os.path.isabs(path) or not target.is_dir() or not any(target.iterdir()):
        raise errdefs.FailedPrecondition(
            f"container has no rootfs: the task request carries no rootfs mounts (is the snapshot missing?) "
            f"and the spec's root.path {path!r} is not a populated directory"
        )


def check_rootfs_mounts(rootfs: list[dict[str, Any]]) -> None:
    """Fail early, with the path, when a rootfs mount refers to a directory that is gone."""
    for m in rootfs:
        dirs: list[str] = []
        if m.get("type") == "overlay":
            for opt in m.get("options", []):
                key, _, value = str(opt).partition("=")
                if key == "lowerdir":
                    dirs += value.split(":")
                elif key in ("upperdir", "workdir"):
                    dirs.append(value)
        elif m.get("type") == "bind" or "bind" in m.get("options", []) or "rbind" in m.get("options", []):
            dirs.append(str(m.get("source", "")))
        for d in dirs:
            if d and not os.path.exists(d):
                raise errdefs.NotFound(
                    f"rootfs mount {m.get('type')} refers to {d}, which does not exist (was the snapshot removed?)"
                )


def create(
    root: Path,
    namespace: str,
    container_id: str,
    spec: dict[str, Any],
    meta: BundleMeta,
    *,
    have_rootfs_mounts: bool,
    raw_spec: bytes | None = None,
) -> Path:
    """Write a new bundle; AlreadyExists if one is there.  Undone on failure.  ``raw_spec``:
    ``spec``'s JSON as the caller has it already (written as it is, not encoded again)."""
    identifiers.validate(namespace)
    identifiers.validate(container_id)
    ns_dir = root / namespace
    ns_dir.mkdir(parents=True, exist_ok=True, mode=fsmodes.TOP_DIR)
    path = ns_dir / container_id
    try:
        path.mkdir(mode=fsmodes.PRIVATE_DIR)
    except FileExistsError as exc:
        raise errdefs.AlreadyExists(f"bundle {path} already exists") from exc
    try:
        gid = userns_root_gid(spec)
        if gid is not None:  # the container's root (a host gid) must reach rootfs/
            os.chown(path, -1, gid)
            os.chmod(path, USERNS_BUNDLE_MODE)
        (path / ROOTFS).mkdir(mode=ROOTFS_MODE)
        check_root(spec, path, have_rootfs_mounts)
        atomic_write(path / CONFIG, raw_spec if raw_spec is not None else json.dumps(spec).encode())
        write_meta(path, meta)
    except BaseException:
        import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


# the annotations that put a container in a shim group (the shim's v2layout reads the same)
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")


def shim_group(spec: Any, container_id: str) -> str:
    """The shim group ``spec`` names (its grouping annotation), else the container's own id."""
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if isinstance(annotations, dict):
        for key in GROUP_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value:
                return value
    return container_id


def userns_root_gid(spec: dict[str, Any]) -> int | None:
    """The host gid that the container's gid 0 maps to, when it runs in a user namespace
    with mappings (``None`` otherwise)."""
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return None
    namespaces = linux.get("namespaces") or []
    if not any(isinstance(n, dict) and n.get("type") == "user" for n in namespaces):
        return None
    for m in linux.get("gidMappings") or []:
        try:
            start, host, size = int(m["containerID"]), int(m["hostID"]), int(m["size"])
        except (KeyError, TypeError, ValueError):
            continue
        if start <= 0 < start + size:
            return host - start
    return None


def close_existing(root: Path) -> list[Path]:
    """Give the runtime directory ``root``, its namespace directories and bundles the modes
    above: an older version made bundles ``0711``, open to everyone while their containers
    run on.  Returns the bundles whose mode changed."""
    changed: list[Path] = []
    os.chmod(root, fsmodes.TOP_DIR)
    for ns_dir in root.iterdir():
        if ns_dir.is_symlink() or not ns_dir.is_dir():
            continue
        if ns_dir.name == TRASH_DIR:
            os.chmod(ns_dir, fsmodes.PRIVATE_DIR)
            continue
        os.chmod(ns_dir, fsmodes.TOP_DIR)
        for b in ns_dir.iterdir():
            st = b.lstat()
            if not stat.S_ISDIR(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o007:
                continue  # closed to others already (0700, or 0710 for a user namespace)
            os.chmod(b, USERNS_BUNDLE_MODE if st.st_gid != 0 else fsmodes.PRIVATE_DIR)
            changed.append(b)
    return changed


def write_meta(path: Path, meta: BundleMeta) -> None:
    atomic_write(path / META, json.dumps(asdict(meta)).encode())


def read_meta(path: Path) -> BundleMeta | None:
    try:
        return BundleMeta.from_json(json.loads((path / META).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_spec(path: Path) -> dict[str, Any]:
    try:
        return parse_spec((path / CONFIG).read_bytes(), f"bundle spec {path / CONFIG}")
    except FileNotFoundError:
        return {}


def remove(path: Path) -> None:
    """Unmount whatever is left on ``rootfs`` and delete the bundle (missing is fine)."""
    if not path.exists():
        return
    unmount_rootfs(path)
    import shutil

    shutil.rmtree(path)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the namespace (or trash) dir, once empty


def mount_rootfs(path: Path, mounts: list[dict[str, Any]]) -> None:
    """Mount the task's rootfs mounts (``{"type", "source", "target", "options"}``) on the
    bundle's ``rootfs/``, as the shim's Create would; a failure leaves nothing mounted."""
    mountpkg.mount_all(
        [
            mountpkg.Mount(
                type=str(m.get("type") or ""),
                source=str(m.get("source") or ""),
                options=[str(o) for o in m.get("options") or ()],
                target=str(m.get("target") or ""),
            )
            for m in mounts
        ],
        path / ROOTFS,
    )


def unmount_rootfs(path: Path) -> None:
    """Unmount everything on (and below) the bundle's ``rootfs/`` (nothing mounted is fine)."""
    rootfs = path / ROOTFS
    if rootfs.exists():
        mountpkg.unmount_all(rootfs)


TRASH_DIR = ".deleted"


def move_to_trash(path: Path) -> Path | None:
    """Rename a bundle out of the way (``<root>/.deleted/<ns>-<id>-<n>``) for ``remove`` to
    delete later, off the request's path; ``None`` if it is already gone.  The namespace
    directory goes at once when this was its last bundle.  ``scan`` skips the trash and
    ``clean_trash`` removes what a crash left in it."""
    trash_dir = path.parent.parent / TRASH_DIR
    for n in range(1000):
        trash_dir.mkdir(mode=0o700, exist_ok=True)
        trash = trash_dir / f"{path.parent.name}-{path.name}-{os.getpid()}-{n}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            if not path.exists():
                return None
            continue  # the trash dir was removed (emptied) meanwhile: make it again
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the namespace dir, once empty
        return trash
    raise errdefs.Unknown(f"cannot move bundle {path} out of the way: too many leftovers")


def clean_trash(root: Path) -> None:
    """Remove the bundles ``move_to_trash`` moved away that were never removed (a crash)."""
    trash_dir = root / TRASH_DIR
    if not trash_dir.is_dir():
        return
    for b in trash_dir.iterdir():
        if b.is_dir():
            remove(b)


def scan(root: Path) -> Iterator[tuple[str, str, Path]]:
    """Every ``(namespace, id, path)`` bundle under ``root``."""
    if not root.is_dir():
        return
    for ns_dir in sorted(root.iterdir()):
        if not ns_dir.is_dir() or ns_dir.name.startswith("."):
            continue
        for b in sorted(ns_dir.iterdir()):
            if b.is_dir() and not b.name.startswith("."):
                yield ns_dir.name, b.name, b
