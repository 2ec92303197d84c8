"""The OCI runtime spec ``pyctr run`` sends, built exactly as containerd 1.6's ``ctr run`` builds it.

ctr composes the spec client-side from a list of options applied in a fixed order
(cmd/ctr/commands/run/run_unix.go): the default Linux spec (``oci.WithDefaultSpec``), the
default device cgroup rules, ``--env``, ``--mount``, the image config (env, entrypoint+cmd,
working dir, user), ``--read-only``, the command line args, ``--cwd``, ``--user``, ``--tty``,
``--privileged``, ``--net-host``, ``--seccomp``, ``--cpus``, the cpu shares (1024 by default),
``--memory-limit`` and finally the ``--label`` values as annotations.  ``build_run_spec``
applies the same steps in the same order, so ``pyctr containers info`` of a container we
made reads like one ctr made.

Everything here is pure: the caller supplies what needs I/O, namely the image config (JSON
dict), the contents of the rootfs' ``/etc/passwd`` and ``/etc/group`` (``RootfsFiles``; ctr
mounts the snapshot read-only to read them, and so does ``client.run``), and for
``--privileged``/``--net-host`` a ``HostInfo`` (current capabilities, host devices,
hostname; ``HostInfo.probe()`` gathers it, blocking).

Specs are plain dicts with the JSON field names of the runtime-spec; ``canonical`` orders
the keys like Go's struct order so the JSON looks like containerd's.  Fields Go omits when
empty are left out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .. import errdefs

Spec = dict[str, Any]

OCI_VERSION = "1.0.2-dev"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
DEFAULT_UNIX_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
STOP_SIGNAL_LABEL = "io.containerd.image.config.stop-signal"

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# Linux capability numbers 0..40, the names ``--privileged`` maps the current set to.
CAPABILITY_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# (type, major, minor) of the devices every container may use (oci.WithDefaultUnixDevices);
# minor None = any minor (the /dev/pts/* pseudo terminals).
DEFAULT_DEVICE_RULES: list[tuple[str, int, int | None]] = [
    ("c", 1, 3),  # /dev/null
    ("c", 1, 8),  # /dev/random
    ("c", 1, 7),  # /dev/full
    ("c", 5, 0),  # /dev/tty
    ("c", 1, 5),  # /dev/zero
    ("c", 1, 9),  # /dev/urandom
    ("c", 5, 1),  # /dev/console
    ("c", 136, None),  # /dev/pts/*
    ("c", 5, 2),  # /dev/ptmx
]


def default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ]


def default_spec(namespace: str, container_id: str) -> Spec:
    """containerd's ``populateDefaultUnixSpec``: what every Linux container starts from."""
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPABILITIES),
                "effective": list(DEFAULT_CAPABILITIES),
                "permitted": list(DEFAULT_CAPABILITIES),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": default_mounts(),
        "linux": {
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
            "cgroupsPath": f"/{namespace}/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        },
    }



def cri_default_spec(namespace: str, container_id: str) -> Spec:
    """What containerd 1.6's CRI starts its sandbox and container specs from: the default spec
    without its ``/run`` tmpfs (``oci.WithoutRunMount``) and without the default rlimits
    (``WithoutDefaultSecuritySettings``: the runtime's own limits apply).  ``pyctr run`` keeps both."""
    spec = default_spec(namespace, container_id)
    spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/run"]
    del spec["process"]["rlimits"]
    return spec


def mount_depth(destination: str) -> int:
    """The number of path elements of a mount destination, by which containerd's CRI orders its
    mounts (``orderedMounts``: a stable sort, so a parent is mounted before what goes under it)."""
    return len(os.path.normpath(destination).split("/"))

# -- /etc/passwd and /etc/group --------------------------------------------------------------
# Records are NamedTuples, not dataclasses: `pyctr run` imports this module, and dataclasses
# (with inspect) would cost more than its whole conversation with the daemon.
class PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 4:
            continue
        try:
            out.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3])))
        except ValueError:
            continue
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 3:
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else []) if m)
        out.append(GroupEntry(parts[0], gid, members))
    return out


class RootfsFiles(NamedTuple):
    """The rootfs' ``/etc/passwd`` and ``/etc/group`` (None when the file does not exist)."""

    passwd: str | None = None
    group: str | None = None


def _atoi(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def _find_user_by_name(files: RootfsFiles, name: str) -> PasswdEntry:
    if files.passwd is None:
        raise errdefs.NotFound(f"unable to find user {name}: the image has no /etc/passwd")
    for u in parse_passwd(files.passwd):
        if u.name == name:
            return u
    raise errdefs.NotFound(f"unable to find user {name}: no matching entries in passwd file")


def _find_group_by_name(files: RootfsFiles, name: str) -> GroupEntry:
    if files.group is None:
        raise errdefs.NotFound(f"unable to find group {name}: the image has no /etc/group")
    for g in parse_group(files.group):
        if g.name == name:
            return g
    raise errdefs.NotFound(f"unable to find group {name}: no matching entries in group file")


def _ensure_additional_gids(spec: Spec) -> None:
    user = spec["process"]["user"]
    gids = user.get("additionalGids") or []
    if user["gid"] not in gids:
        user["additionalGids"] = [user["gid"], *gids]


def with_user(spec: Spec, userstr: str, files: RootfsFiles) -> None:
    """``oci.WithUser``: ``user``, ``uid``, ``user:group``, ``uid:gid``, ``uid:group``, ``user:gid``."""
    user = spec["process"].setdefault("user", {"uid": 0, "gid": 0})
    parts = userstr.split(":")
    if len(parts) == 1:
        uid = _atoi(parts[0])
        if uid is None:
            entry = _find_user_by_name(files, parts[0])
            user["uid"], user["gid"] = entry.uid, entry.gid
        else:
            # a uid: take its primary group from /etc/passwd when listed there, else gid 0
            match = next((u for u in parse_passwd(files.passwd or "") if u.uid == uid), None)
            user["uid"], user["gid"] = (match.uid, match.gid) if match else (uid, 0)
    elif len(parts) == 2:
        uid, gid = _atoi(parts[0]), _atoi(parts[1])
        if uid is None:
            uid = _find_user_by_name(files, parts[0]).uid
        if gid is None:
            gid = _find_group_by_name(files, parts[1]).gid
        user["uid"], user["gid"] = uid, gid
    else:
        raise errdefs.InvalidArgument(f"invalid USER value {userstr}")
    _ensure_additional_gids(spec)


def with_additional_gids(spec: Spec, userstr: str, files: RootfsFiles) -> None:
    """``oci.WithAdditionalGIDs``: the groups of /etc/group listing the user as a member, plus the primary gid."""
    username: str | None = userstr
    uid = _atoi(userstr)
    if uid is not None:
        match = next((u for u in parse_passwd(files.passwd or "") if u.uid == uid), None)
        username = match.name if match else None
    if username is not None and files.group is not None:
        spec["process"]["user"]["additionalGids"] = [
            g.gid for g in parse_group(files.group) if g.name != username and username in g.members
        ]
    _ensure_additional_gids(spec)


# -- environment -----------------------------------------------------------------------------
def replace_or_append_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """containerd's ``replaceOrAppendEnvValues``: KEY=V replaces in place or appends; a bare KEY unsets."""
    results = list(defaults)
    index = {e.partition("=")[0]: i for i, e in enumerate(defaults)}
    for value in overrides:
        key, sep, _ = value.partition("=")
        if not sep:
            if key in index:
                results[index[key]] = ""
            continue
        if key in index:
            results[index[key]] = value
        else:
            results.append(value)
    return [e for e in results if e != ""]


def with_env(spec: Spec, env: Sequence[str]) -> None:
    if env:
        spec["process"]["env"] = replace_or_append_env(spec["process"].get("env") or [], env)


# -- mounts ----------------------------------------------------------------------------------
def parse_mount_flag(value: str) -> dict[str, Any]:
    """ctr's ``--mount type=bind,src=/a,dst=/b,options=rbind:ro``."""
    m: dict[str, Any] = {}
    for fld in (f for f in value.split(",") if f):
        key, sep, val = fld.partition("=")
        if not sep:
            raise errdefs.InvalidArgument(f"invalid mount specification {value!r}: expected key=val")
        if key == "type":
            m["type"] = val
        elif key in ("source", "src"):
            m["source"] = val
        elif key in ("destination", "dst"):
            m["destination"] = val
        elif key == "options":
            m["options"] = val.split(":")
        else:
            raise errdefs.InvalidArgument(f"mount option {key!r} not supported")
    if not m.get("destination"):
        raise errdefs.InvalidArgument(f"invalid mount specification {value!r}: dst is required")
    return m


def with_mounts(spec: Spec, mounts: Sequence[Mapping[str, Any]]) -> None:
    spec.setdefault("mounts", []).extend(dict(m) for m in mounts)


# -- image config ----------------------------------------------------------------------------
def with_image_config(spec: Spec, image_config: Mapping[str, Any], files: RootfsFiles) -> None:
    """``oci.WithImageConfig``: env (image env under our overrides), entrypoint+cmd, working dir, user."""
    config: Mapping[str, Any] = image_config.get("config") or {}
    proc = spec["process"]
    defaults = list(config.get("Env") or []) or list(DEFAULT_UNIX_ENV)
    proc["env"] = replace_or_append_env(defaults, proc.get("env") or [])
    proc["args"] = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    proc["cwd"] = config.get("WorkingDir") or "/"
    user = config.get("User") or ""
    if user:
        with_user(spec, user, files)
        with_additional_gids(spec, str(proc["user"]["uid"]), files)
    else:
        with_additional_gids(spec, "root", files)


def image_labels(image_config: Mapping[str, Any]) -> dict[str, str]:
    """The container labels ctr derives from an image: its config labels plus the stop signal."""
    config: Mapping[str, Any] = image_config.get("config") or {}
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items() if _valid_label(str(k), str(v))}
    labels[STOP_SIGNAL_LABEL] = config.get("StopSignal") or "SIGTERM"
    return labels


def _valid_label(key: str, value: str) -> bool:
    return 0 < len(key) + len(value) <= 4096


# -- host facts ------------------------------------------------------------------------------
class HostInfo(NamedTuple):
    capabilities: Sequence[str] = ()
    devices: Sequence[dict[str, Any]] = ()
    hostname: str = ""

    @classmethod
    def probe(cls) -> HostInfo:
        """Read the current capabilities, /dev and the hostname (blocking; run in a thread)."""
        import socket

        return cls(current_capabilities(), host_devices(), socket.gethostname())


def current_capabilities(status_path: str = "/proc/self/status") -> list[str]:
    """The names of this process's effective capabilities, in capability-number order."""
    mask = 0
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
    return [name for bit, name in enumerate(CAPABILITY_NAMES) if mask & (1 << bit)]


_SKIP_DEV_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every block/char device under /dev (like containerd's ``HostDevices``), sorted per directory."""
    out: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if name not in _SKIP_DEV_DIRS:
                out.extend(host_devices(path))
            continue
        if name == "console" or os.major(st.st_rdev) == 0:
            continue
        if stat.S_ISBLK(st.st_mode):
            kind = "b"
        elif stat.S_ISCHR(st.st_mode):
            kind = "c"
        else:
            continue
        out.append({"path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                    "fileMode": stat.S_IMODE(st.st_mode) | (st.st_mode & 0o7000), "uid": st.st_uid,
                    "gid": st.st_gid})
    return out


# -- the option steps ------------------------------------------------------------------------
def with_default_unix_devices(spec: Spec) -> None:
    rules = spec["linux"].setdefault("resources", {}).setdefault("devices", [])
    for kind, major, minor in DEFAULT_DEVICE_RULES:
        rule: dict[str, Any] = {"allow": True, "type": kind, "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)


def with_tty(spec: Spec) -> None:
    spec["process"]["terminal"] = True
    spec["process"]["env"] = [*(spec["process"].get("env") or []), "TERM=xterm"]


def with_capabilities(spec: Spec, caps: Sequence[str]) -> None:
    spec["process"]["capabilities"] = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}


def with_privileged(spec: Spec, host: HostInfo) -> None:
    """``oci.WithPrivileged`` + ``WithAllDevicesAllowed`` + ``WithHostDevices``."""
    with_capabilities(spec, host.capabilities)
    spec["linux"].pop("maskedPaths", None)
    spec["linux"].pop("readonlyPaths", None)
    for m in spec.get("mounts", []):
        if m.get("type") in ("sysfs", "cgroup"):
            m["options"] = ["rw" if o == "ro" else o for o in m.get("options", [])]
    spec["linux"].setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    spec["linux"]["devices"] = [dict(d) for d in host.devices]


def with_host_network(spec: Spec, host: HostInfo) -> None:
    spec["linux"]["namespaces"] = [n for n in spec["linux"].get("namespaces", []) if n.get("type") != "network"]
    spec.setdefault("mounts", []).extend([
        {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
    ])
    with_env(spec, [f"HOSTNAME={host.hostname}"])


def with_cpu_cfs(spec: Spec, quota: int, period: int) -> None:
    cpu = spec["linux"].setdefault("resources", {}).setdefault("cpu", {})
    cpu["quota"] = quota
    cpu["period"] = period


def with_cpu_shares(spec: Spec, shares: int) -> None:
    spec["linux"].setdefault("resources", {}).setdefault("cpu", {})["shares"] = shares


def with_memory_limit(spec: Spec, limit: int) -> None:
    spec["linux"].setdefault("resources", {}).setdefault("memory", {})["limit"] = limit


def with_annotations(spec: Spec, annotations: Mapping[str, str]) -> None:
    if annotations:
        spec.setdefault("annotations", {}).update(annotations)


# -- the whole of ctr run --------------------------------------------------------------------
class RunOptions(NamedTuple):
    """The spec-shaping flags of ``ctr run`` / ``pyctr run``."""

    args: Sequence[str] = ()
    env: Sequence[str] = ()
    mounts: Sequence[str] = ()  # --mount values
    labels: Mapping[str, str] = {}  # shared default: never mutated
    read_only: bool = False
    cwd: str = ""
    user: str = ""
    tty: bool = False
    privileged: bool = False
    net_host: bool = False
    seccomp: bool = False
    cpus: float = 0.0
    cpu_shares: int = 1024
    memory_limit: int = 0
    hostname: str = ""
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()

    @property
    def needs_host(self) -> bool:
        return self.privileged or self.net_host


def build_run_spec(namespace: str, container_id: str, image_config: Mapping[str, Any], opts: RunOptions,
                   files: RootfsFiles, host: HostInfo | None = None) -> Spec:
    """The spec ``ctr run IMAGE ID ARGS`` would create, for the given flags."""
    if opts.needs_host and host is None:
        raise errdefs.InvalidArgument("--privileged and --net-host need the host's facts (HostInfo)")
    mounts = [parse_mount_flag(m) for m in opts.mounts]
    spec = default_spec(namespace, container_id)
    with_default_unix_devices(spec)
    with_env(spec, opts.env)
    with_mounts(spec, mounts)
    with_image_config(spec, image_config, files)
    if opts.read_only:
        spec["root"]["readonly"] = True
    if opts.args:
        spec["process"]["args"] = list(opts.args)
    if opts.cwd:
        spec["process"]["cwd"] = opts.cwd
    if opts.user:
        with_user(spec, opts.user, files)
        with_additional_gids(spec, opts.user, files)
    if opts.tty:
        with_tty(spec)
    if opts.privileged:
        assert host is not None
        with_privileged(spec, host)
    if opts.net_host:
        assert host is not None
        with_host_network(spec, host)
    for cap in (*opts.cap_add, *opts.cap_drop):
        if not cap.startswith("CAP_"):
            raise errdefs.InvalidArgument("capabilities must be specified with 'CAP_' prefix")
    if opts.cap_add:
        caps = spec["process"]["capabilities"]
        for key in ("bounding", "effective", "permitted"):
            caps[key] = [*caps[key], *(c for c in opts.cap_add if c not in caps[key])]
    if opts.cap_drop:
        caps = spec["process"]["capabilities"]
        drop_all = "CAP_ALL" in opts.cap_drop
        for key in ("bounding", "effective", "permitted"):
            caps[key] = [] if drop_all else [c for c in caps[key] if c not in opts.cap_drop]
    if opts.seccomp:
        from .seccomp import default_profile  # a large table: only when asked for

        spec["linux"]["seccomp"] = default_profile(spec["process"]["capabilities"]["bounding"])
    if opts.cpus > 0:
        with_cpu_cfs(spec, int(opts.cpus * 100000.0), 100000)
    if opts.cpu_shares > 0:
        with_cpu_shares(spec, opts.cpu_shares)
    if opts.memory_limit:
        with_memory_limit(spec, opts.memory_limit)
    if opts.hostname:
        spec["hostname"] = opts.hostname
    with_annotations(spec, opts.labels)
    return canonical(spec)


# -- key order like Go's structs -------------------------------------------------------------
_ORDER: dict[str, tuple[str, ...]] = {
    "spec": ("ociVersion", "process", "root", "hostname", "mounts", "hooks", "annotations", "linux"),
    "process": ("terminal", "consoleSize", "user", "args", "commandLine", "env", "cwd", "capabilities", "rlimits",
                "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "selinuxLabel"),
    "user": ("uid", "gid", "umask", "additionalGids", "username"),
    "capabilities": ("bounding", "effective", "inheritable", "permitted", "ambient"),
    "root": ("path", "readonly"),
    "mount": ("destination", "type", "source", "uidMappings", "gidMappings", "options"),
    "linux": ("uidMappings", "gidMappings", "sysctl", "resources", "cgroupsPath", "namespaces", "devices",
              "seccomp", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt",
              "personality"),
    "resources": ("devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified"),
    "cpu": ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle"),
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
               "useHierarchy"),
}


def _ordered(d: Mapping[str, Any], kind: str) -> dict[str, Any]:
    order = _ORDER[kind]
    keys = [k for k in order if k in d] + [k for k in d if k not in order]
    return {k: d[k] for k in keys}


def canonical(spec: Spec) -> Spec:
    """The same spec with keys in the order containerd's JSON has them."""
    out = _ordered(spec, "spec")
    if isinstance(out.get("process"), dict):
        proc = _ordered(out["process"], "process")
        if isinstance(proc.get("user"), dict):
            proc["user"] = _ordered(proc["user"], "user")
        if isinstance(proc.get("capabilities"), dict):
            proc["capabilities"] = _ordered(proc["capabilities"], "capabilities")
        out["process"] = proc
    if isinstance(out.get("root"), dict):
        out["root"] = _ordered(out["root"], "root")
    if isinstance(out.get("mounts"), list):
        out["mounts"] = [_ordered(m, "mount") if isinstance(m, dict) else m for m in out["mounts"]]
    if isinstance(out.get("linux"), dict):
        linux = _ordered(out["linux"], "linux")
        if isinstance(linux.get("resources"), dict):
            res = _ordered(linux["resources"], "resources")
            for kind in ("cpu", "memory"):
                if isinstance(res.get(kind), dict):
                    res[kind] = _ordered(res[kind], kind)
            linux["resources"] = res
        out["linux"] = linux
    return out


def process_spec(spec: Spec, args: Sequence[str], *, tty: bool = False, cwd: str = "",
                 env: Sequence[str] = (), user: str = "", files: RootfsFiles | None = None) -> dict[str, Any]:
    """The process spec of ``ctr tasks exec``: the container's process with new args/terminal."""
    base = {"process": dict(spec.get("process") or {})}
    base["process"]["user"] = dict(base["process"].get("user") or {"uid": 0, "gid": 0})
    base["process"]["args"] = list(args)
    base["process"]["terminal"] = tty
    if not tty:
        base["process"].pop("terminal")
    if cwd:
        base["process"]["cwd"] = cwd
    if env:
        with_env(base, env)
    if user:
        with_user(base, user, files or RootfsFiles())
    result: dict[str, Any] = _ordered(base["process"], "process")
    return result
