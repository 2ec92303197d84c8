"""Image-defined volumes (an image config's ``Volumes``) of CRI containers, as containerd 1.6 makes them.

Unless the CRI config's ``ignore_image_defined_volumes`` is set, every volume path of the image that
no mount of the ContainerConfig covers gets a directory of its own under the plugin's root,
``<root>/containers/<container id>/volumes/<random id>``, filled with what the image has at that
path (contents, modes, owners, times and xattrs but ``security.selinux``, as containerd's
``WithVolumes`` copies them from the mounted snapshot) and bind-mounted there (``rbind``,
``rprivate``, ``rw``), ordered with the pod's files.  It goes with the container
(RemoveContainer removes the directory).  A volume path the image does not have gets an empty
directory; one where the image has something other than a directory (a file) is refused at
CreateContainer, as containerd 1.6 refuses it there (``copyExistingContents``: "source ... is not
directory"): a directory bind-mounted onto a file would only fail at StartContainer (runc).

``wanted`` is pure; ``fill`` blocks (mount, copy): run it in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import errdefs
from ..fsmodes import private_dir
from ..mount.core import Mount, mount_all, unmount_all
from ..mountopts import resolve_in_root


def wanted(image_config: Mapping[str, Any], cri_mount_paths: Iterable[str], *, ignore: bool) -> list[str]:
    """The image's volume paths a container gets a volume for (sorted; containerd walks a Go map)."""
    if ignore:
        return []
    volumes = (image_config.get("config") or {}).get("Volumes") or {}
    given = {os.path.normpath(p) for p in cri_mount_paths}
    return sorted(p for p in volumes if os.path.normpath(p) not in given)


def container_dir(root: Path, cid: str) -> Path:
    return root / "containers" / cid


def bind_mounts(volumes: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The OCI mounts of (container path, host dir) volumes."""
    return [{"destination": dst, "type": "bind", "source": host, "options": ["rbind", "rprivate", "rw"]}
            for dst, host in volumes]


def fill(root: Path, cid: str, paths: Sequence[str], rootfs: Sequence[Mount]) -> list[tuple[str, str]]:
    """Make the volume directories of container ``cid`` and copy into each what the image has at
    its path (the rootfs snapshot mounted read-only meanwhile); (container path, host dir) pairs.
    On failure what was made is removed."""
    if not paths:
        return []
    base = container_dir(root, cid) / "volumes"
    private_dir(base)
    out = []
    try:
        for p in paths:
            made = base / secrets.token_hex(32)
            made.mkdir(mode=0o755)
            out.append((p, str(made)))
        mnt = tempfile.mkdtemp(prefix="pycd-volume-")
        try:
            ro = [Mount(m.type, m.source, [*m.options, "ro"] if m.type == "overlay" else list(m.options), m.target)
                  for m in rootfs]
            mount_all(ro, mnt)
            try:
                for p, host in out:
                    src = resolve_in_root(mnt, p)
                    try:
                        mode = os.stat(src).st_mode
                    except FileNotFoundError:
                        continue  # not in the image: an empty volume
                    if not stat.S_ISDIR(mode):
                        raise errdefs.FailedPrecondition(
                            f"image volume {p!r}: the image has {_kind(mode)} at {p!r}, not a directory (containerd: "
                            "taking runtime copy of volume: source is not directory); mount a volume at that path "
                            "in the container config, or set ignore_image_defined_volumes")
                    _copy_dir(src, host)
            finally:
                unmount_all(mnt)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(mnt)  # never rmtree: it could still hold the rootfs
    except BaseException:
        remove(root, cid)
        raise
    return out


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "something"


def remove(root: Path, cid: str) -> None:
    """The container's volume directories, gone (none is fine)."""
    shutil.rmtree(container_dir(root, cid), ignore_errors=True)


# -- the copy: containerd's fs.CopyDir (continuity) -----------------------------------------------------
def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        names = []
    for name in names:
        if name == "security.selinux":
            continue
        with contextlib.suppress(OSError):  # a namespace the target fs refuses (as continuity's lax mode)
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_dir(src: str, dst: str) -> None:
    """``src``'s tree into the (empty) directory ``dst``, ``dst`` taking ``src``'s owner and mode."""
    if os.listdir(dst):
        raise errdefs.FailedPrecondition(f"volume at {dst!r} is not initially empty")
    links: dict[tuple[int, int], str] = {}

    def walk(s: str, d: str) -> None:
        with os.scandir(s) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            sp, dp = e.path, os.path.join(d, e.name)
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(dp, 0o700)
                walk(sp, dp)
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                    os.link(links[(st.st_dev, st.st_ino)], dp)
                    continue
                shutil.copyfile(sp, dp, follow_symlinks=False)
                links[(st.st_dev, st.st_ino)] = dp
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(sp), dp)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                os.mknod(dp, mode, st.st_rdev)
            else:
                continue  # sockets: nothing to copy
            _copy_meta(sp, dp, st)

    walk(src, dst)
    _copy_meta(src, dst, os.stat(src))
