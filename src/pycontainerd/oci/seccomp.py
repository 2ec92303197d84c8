"""The default seccomp profile ``pyctr run --seccomp`` puts in the spec: containerd 1.6's
``contrib/seccomp`` default, rebuilt here as data plus the few rules that depend on the
process's bounding capabilities, the architecture and the kernel.

What it does: the default action is ``SCMP_ACT_ERRNO`` (EPERM), and an allow-list of ~350
ordinary syscalls is let through.  Blocked unless the container holds the capability that
governs them:

- ``CAP_SYS_ADMIN``: mount/umount/umount2 and the new mount API (fsopen, fsmount, open_tree,
  move_mount, mount_setattr ...), unshare, setns, sethostname/setdomainname, bpf,
  perf_event_open, fanotify_init, name_to_handle_at, lookup_dcookie, quotactl, syslog, and
  ``clone`` with namespace flags (without it, clone is allowed only when none of
  CLONE_NEWNS/UTS/IPC/USER/PID/NET/CGROUP is set, and clone3 fails with ENOSYS so libcs fall
  back to clone);
- ``CAP_SYS_MODULE``: init_module/finit_module/delete_module;  ``CAP_SYS_BOOT``: reboot;
- ``CAP_SYS_PTRACE``: kcmp, process_vm_readv/writev, pidfd_getfd, process_madvise
  (plain ``ptrace`` is allowed on kernels >= 4.8, whose ptrace no longer bypasses seccomp);
- ``CAP_SYS_TIME``: settimeofday, stime, clock_settime;  ``CAP_SYS_RAWIO``: iopl, ioperm;
- ``CAP_SYS_PACCT``: acct;  ``CAP_SYS_NICE``: mbind, get/set_mempolicy;
- ``CAP_SYS_TTY_CONFIG``: vhangup;  ``CAP_DAC_READ_SEARCH``: open_by_handle_at;
- ``CAP_SYSLOG``: syslog;  ``CAP_PERFMON``: perf_event_open;  ``CAP_BPF``: bpf.

Always blocked: keyctl/add_key/request_key (the kernel keyring is not namespaced),
userfaultfd, kexec_*, swapon/swapoff, pivot_root, nfsservctl, personality with any
persona other than the five harmless ones, and every syscall not named anywhere here.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from typing import Any

from .. import errdefs

# Allowed for everyone (containerd 1.6.20's list; names unknown to an architecture are ignored by runc).
BASE_ALLOW: tuple[str, ...] = (
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod",
    "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
    "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
    "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
    "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat",
    "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll",
    "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
    "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
    "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socket", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
    "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
    "waitid", "waitpid", "write", "writev",
)

CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP
ENOSYS = 38

# Capability -> syscalls it unlocks; applied in the order the capabilities appear in the
# spec's bounding set (which is what fixes the order of the rules in the output).
CAPABILITY_RULES: dict[str, tuple[str, ...]] = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
        "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree", "perf_event_open", "quotactl",
        "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_PERFMON": ("perf_event_open",),
    "CAP_BPF": ("bpf",),
}

_ARCHES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    # machine -> (seccomp architectures, arch-only syscalls)
    "x86_64": (["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], ("arch_prctl", "modify_ldt")),
    "aarch64": (["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
                ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls")),
    "i686": (["SCMP_ARCH_X86"], ("modify_ldt",)),
    "s390x": (["SCMP_ARCH_S390", "SCMP_ARCH_S390X"],
              ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr")),
}


def _allow(names: Sequence[str], args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ALLOW"}
    if args:
        rule["args"] = args
    return rule


def _kernel_at_least(release: str, major: int, minor: int) -> bool:
    parts = release.split(".")
    try:
        return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) >= (major, minor)
    except (IndexError, ValueError):
        return False


def default_profile(bounding: Sequence[str], *, machine: str | None = None,
                    kernel_release: str | None = None) -> dict[str, Any]:
    """The default profile for a process whose bounding capability set is ``bounding``."""
    machine = machine or platform.machine()
    kernel_release = kernel_release or os.uname().release
    arches, arch_calls = _ARCHES.get(machine, ([], ()))
    rules: list[dict[str, Any]] = [_allow(BASE_ALLOW)]
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        rules.append(_allow(["personality"], [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]))
    if _kernel_at_least(kernel_release, 4, 8):
        rules.append(_allow(["ptrace"]))
    if arch_calls:
        rules.append(_allow(arch_calls))
    admin = False
    for cap in bounding:
        names = CAPABILITY_RULES.get(cap)
        if names:
            rules.append(_allow(names))
        admin = admin or cap == "CAP_SYS_ADMIN"
    if not admin:
        index = 1 if machine.startswith("s390") else 0
        rules.append(_allow(["clone"], [{"index": index, "value": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}]))
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": arches, "syscalls": rules}


# The fields of the runtime-spec's ``linux.seccomp`` (what a profile file may hold).
PROFILE_FIELDS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata",
                  "syscalls")


def parse_profile(text: str | bytes, source: str) -> dict[str, Any]:
    """A seccomp profile in the runtime-spec's ``linux.seccomp`` JSON form (what containerd's
    ``seccomp.WithProfile`` loads for CRI's Localhost profiles), checked enough that runc will not
    be the first to trip over it.  Raises ``InvalidArgument`` naming ``source`` and the fault."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidArgument(f"seccomp profile {source}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise errdefs.InvalidArgument(f"seccomp profile {source}: expected a JSON object, got {type(doc).__name__}")
    action = doc.get("defaultAction")
    if not isinstance(action, str) or not action.startswith("SCMP_ACT_"):
        raise errdefs.InvalidArgument(f"seccomp profile {source}: defaultAction must be an SCMP_ACT_* name, "
                                      f"got {action!r}")
    for key in ("architectures", "flags"):
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise errdefs.InvalidArgument(f"seccomp profile {source}: {key} must be a list of strings")
    syscalls = doc.get("syscalls", [])
    if not isinstance(syscalls, list):
        raise errdefs.InvalidArgument(f"seccomp profile {source}: syscalls must be a list")
    for i, rule in enumerate(syscalls):
        if (not isinstance(rule, dict) or not isinstance(rule.get("names"), list)
                or not all(isinstance(n, str) for n in rule["names"])
                or not isinstance(rule.get("action"), str)):
            raise errdefs.InvalidArgument(f"seccomp profile {source}: syscalls[{i}] needs names (strings) and "
                                          "an action")
    return {k: doc[k] for k in PROFILE_FIELDS if k in doc}


def load_profile(path: str) -> dict[str, Any]:
    """``parse_profile`` of the file at ``path`` (blocking: run it in a thread)."""
    try:
        with open(path, "rb") as f:
            text = f.read(4 << 20)
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"cannot load seccomp profile {path!r}") from exc
    return parse_profile(text, repr(path))
