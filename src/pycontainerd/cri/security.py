"""CRI security profiles (seccomp, AppArmor) and the user string, decided as containerd 1.6 decides them.

A profile comes from the ``SecurityProfile`` message when it is set, else from the deprecated
string (``seccomp_profile_path`` / ``apparmor_profile``: ``runtime/default``, ``docker/default``,
``unconfined``, ``localhost/<ref>``; empty = not asked).  Then:

- seccomp: privileged -> none; not asked or Unconfined -> none; RuntimeDefault -> our default
  profile (``oci.seccomp.default_profile``, from the bounding capabilities); Localhost -> the
  JSON file at the (absolute) path, refused when it cannot be read or is not a profile.
- seccomp: when the context asks nothing, the CRI config's ``unset_seccomp_profile`` (a string of the
  deprecated form) is what it asks.
- AppArmor: on a host without AppArmor (``/sys/module/apparmor/parameters/enabled`` not ``Y``), or
  with the CRI config's ``disable_apparmor``, nothing is applied and only a Localhost request is
  refused.  With AppArmor: Unconfined, not asked, or RuntimeDefault for a privileged container ->
  none; Localhost -> the profile by name when the kernel has it loaded; RuntimeDefault otherwise is
  refused (pycontainerd does not generate and load containerd's ``cri-containerd.apparmor.d`` profile).

Pure functions: the caller reads files and sysfs (in a thread) and passes what it read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb

LOCALHOST_PREFIX = "localhost/"
APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
APPARMOR_PROFILES = "/sys/kernel/security/apparmor/profiles"

RUNTIME_DEFAULT = pb.SecurityProfile.RuntimeDefault
UNCONFINED = pb.SecurityProfile.Unconfined
LOCALHOST = pb.SecurityProfile.Localhost


@dataclass(frozen=True)
class Profile:
    """One asked-for profile: its type and, for Localhost, the path (seccomp) or name (AppArmor)."""

    type: int
    ref: str = ""


def profile_from_string(value: str, what: str) -> Profile | None:
    """The deprecated string form; None when empty (not asked)."""
    if not value:
        return None
    if value in ("runtime/default", "docker/default"):
        return Profile(RUNTIME_DEFAULT)
    if value == "unconfined":
        return Profile(UNCONFINED)
    if value.startswith(LOCALHOST_PREFIX):
        return Profile(LOCALHOST, value[len(LOCALHOST_PREFIX):])
    raise errdefs.InvalidArgument(f"invalid {what} profile {value!r}: expected runtime/default, docker/default, "
                                  f"unconfined or localhost/<{'path' if what == 'seccomp' else 'name'}>")


def requested(msg: pb.SecurityProfile | None, legacy: str, what: str) -> Profile | None:
    """The profile the message asks for when it is set, else the deprecated string's."""
    if msg is None:
        return profile_from_string(legacy, what)
    if msg.profile_type not in (RUNTIME_DEFAULT, UNCONFINED, LOCALHOST):
        raise errdefs.InvalidArgument(f"{what}: unknown profile type {msg.profile_type}")
    if msg.profile_type != LOCALHOST:
        if msg.localhost_ref:
            raise errdefs.InvalidArgument(f"{what}: localhost_ref must only be set for a Localhost profile")
        return Profile(msg.profile_type)
    ref = msg.localhost_ref.removeprefix(LOCALHOST_PREFIX)
    if not ref:
        raise errdefs.InvalidArgument(f"{what}: a Localhost profile needs localhost_ref")
    return Profile(LOCALHOST, ref)


def _field(sc: Any, name: str) -> pb.SecurityProfile | None:
    return getattr(sc, name) if sc.HasField(name) else None


def seccomp_request(sc: Any, unset: str = "") -> Profile | None:
    """What seccomp a container or sandbox security context gets: None (no filter), RuntimeDefault or
    Localhost (with an absolute path to load).  ``unset`` is the CRI config's ``unset_seccomp_profile``:
    the string used when the context asks nothing (neither the message nor the deprecated string)."""
    prof = requested(_field(sc, "seccomp"), sc.seccomp_profile_path or unset, "seccomp")
    if sc.privileged or prof is None or prof.type == UNCONFINED:
        return None
    if prof.type == LOCALHOST and not os.path.isabs(prof.ref):
        raise errdefs.InvalidArgument(f"seccomp: the Localhost profile {prof.ref!r} must be an absolute path")
    return prof


def apparmor_profile(sc: Any, *, enabled: bool, loaded: frozenset[str]) -> str:
    """The ``process.apparmorProfile`` for a security context ("" = none); ``loaded`` are the
    profile names the kernel has (read from ``APPARMOR_PROFILES``)."""
    legacy = getattr(sc, "apparmor_profile", "")  # sandboxes have no deprecated string
    prof = requested(_field(sc, "apparmor"), legacy, "apparmor")
    if not enabled:
        if prof is not None and prof.type == LOCALHOST:
            raise errdefs.FailedPrecondition(
                f"apparmor profile {prof.ref!r} asked for, but AppArmor is not enabled on this host "
                f"({APPARMOR_ENABLED})")
        return ""
    if prof is None or prof.type == UNCONFINED or (prof.type == RUNTIME_DEFAULT and sc.privileged):
        return ""
    if prof.type == RUNTIME_DEFAULT:
        raise errdefs.FailedPrecondition(
            "the RuntimeDefault AppArmor profile is not supported by pycontainerd (it loads no profile of its "
            "own): ask for Unconfined or a Localhost profile loaded on the host")
    if prof.ref not in loaded:
        raise errdefs.FailedPrecondition(f"apparmor profile not found: {prof.ref!r} is not loaded on this host")
    return prof.ref


def read_apparmor() -> tuple[bool, frozenset[str]]:
    """(AppArmor enabled, the loaded profile names) from sysfs (blocking: run it in a thread)."""
    try:
        with open(APPARMOR_ENABLED) as f:
            enabled = f.read().strip().upper().startswith("Y")
    except OSError:
        return False, frozenset()
    names: set[str] = set()
    try:
        with open(APPARMOR_PROFILES) as f:
            for line in f:  # "name (mode)"
                name, _, _ = line.rstrip("\n").rpartition(" (")
                if name:
                    names.add(name)
    except OSError:
        pass
    return enabled, frozenset(names)


def user_string(username: str, uid: pb.Int64Value | None, gid: pb.Int64Value | None) -> str:
    """containerd's ``generateUserString``: username wins over uid; a group needs a user."""
    user = username or (str(uid.value) if uid is not None else "")
    if not user:
        if gid is not None:
            raise errdefs.InvalidArgument(f"user group {gid.value} is specified without user "
                                          "(run_as_group needs run_as_user or run_as_username)")
        return ""
    return f"{user}:{gid.value}" if gid is not None else user


def refuse_user_namespace(opts: pb.NamespaceOption) -> None:
    """User namespaces (NamespaceOption.userns_options) are not supported: NODE (or none) only.
    Status tells the kubelet so (no handler has ``user_namespaces``)."""
    if opts.HasField("userns_options") and (opts.userns_options.mode != pb.NODE or opts.userns_options.uids
                                            or opts.userns_options.gids):
        raise errdefs.InvalidArgument("user namespaces (userns_options other than NODE) are not supported by "
                                      "pycontainerd")
