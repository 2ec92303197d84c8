"""What the CRI plugin's own keys (``[plugins."io.containerd.grpc.v1.cri"]``) do to the specs of pods
and containers, decided as containerd 1.6's CRI decides them.

- ``enable_unprivileged_ports`` / ``enable_unprivileged_icmp``: a sandbox that has its own network
  namespace gets ``net.ipv4.ip_unprivileged_port_start=0`` / ``net.ipv4.ping_group_range=0 2147483647``
  unless the pod sets them itself (the ICMP one not when the daemon runs in a user namespace).
- ``disable_cgroup``: no ``linux.cgroupsPath`` and no resources from the request (nor the sandbox's
  cpu shares); the default device rules stay.
- ``disable_hugetlb_controller`` (default true): hugepage limits are never set.  Otherwise they are
  set when the host has the hugetlb controller; without it a container with resources fails, unless
  ``tolerate_missing_hugetlb_controller`` (default true), which drops the limits with a warning.
- ``disable_proc_mount``: the default spec's masked and read-only /proc paths stay, whatever the
  request lists (without it the request's lists replace them).
- ``device_ownership_from_security_context``: the config's devices belong to ``run_as_user`` /
  ``run_as_group`` (non-zero ones) rather than to the host node's owner.
- ``containerd.ignore_rdt_not_enabled_errors`` / ``ignore_blockio_not_enabled_errors``: pycontainerd
  never enables RDT or blockio classes (containerd's ``rdt_config_file`` / ``blockio_config_file``), so
  a container whose annotations ask for a class fails, as in containerd without them, unless the
  matching key is set (then the class is dropped).
- ``enable_selinux`` (and ``selinux_category_range``): on a host without SELinux containerd only warns
  and labels nothing, and so do we; on a host with SELinux the plugin refuses to start (labelling is
  not implemented).

``unset_seccomp_profile`` and ``disable_apparmor`` are applied where the profiles are decided
(``security.py``); ``enable_cdi`` and a non-default ``cdi_spec_dirs`` are refused when the config
is read.  Pure functions: callers read the host facts (``cgroups.hugetlb_controller``,
``host_has_selinux``) once, off the event loop.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from .. import errdefs
from ..config import CRIConfig

log = logging.getLogger("pycontainerd.cri")

UNPRIVILEGED_PORT_START = "net.ipv4.ip_unprivileged_port_start"
PING_GROUP_RANGE = "net.ipv4.ping_group_range"
ALL_GROUPS = "0 2147483647"

RDT_CONTAINER_ANNOTATION = "io.kubernetes.cri.rdt-class"
RDT_POD_ANNOTATION = "rdt.resources.beta.kubernetes.io/pod"
RDT_POD_CONTAINER_PREFIX = "rdt.resources.beta.kubernetes.io/container."
BLOCKIO_CONTAINER_ANNOTATION = "io.kubernetes.cri.blockio-class"
BLOCKIO_POD_ANNOTATION = "blockio.resources.beta.kubernetes.io/pod"
BLOCKIO_POD_CONTAINER_PREFIX = "blockio.resources.beta.kubernetes.io/container."

SELINUX_FS = "/sys/fs/selinux"


def running_in_user_namespace(uid_map: str | None = None) -> bool:
    """Whether this process runs in a user namespace (its uid map is not the whole range onto itself)."""
    if uid_map is None:
        return _in_user_namespace()
    return uid_map.split() != ["0", "0", "4294967295"]


@functools.cache
def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:  # procfs: answered at once, read once
            return running_in_user_namespace(f.read())
    except OSError:
        return False


def sandbox_sysctls(config: CRIConfig, asked: Mapping[str, str], *, host_network: bool,
                    in_user_namespace: bool | None = None) -> dict[str, str]:
    """The ``linux.sysctl`` of a sandbox: the pod's, plus the unprivileged ports/ICMP ones."""
    if in_user_namespace is None:
        in_user_namespace = running_in_user_namespace()
    out = dict(asked)
    if not host_network:
        if config.enable_unprivileged_ports and UNPRIVILEGED_PORT_START not in out:
            out[UNPRIVILEGED_PORT_START] = "0"
        if config.enable_unprivileged_icmp and PING_GROUP_RANGE not in out and not in_user_namespace:
            out[PING_GROUP_RANGE] = ALL_GROUPS
    return out


def hugepage_limits(config: CRIConfig, resources: dict[str, Any], *, present: bool) -> None:
    """Apply the hugetlb keys to the OCI resources of a request (in place; ``hugepageLimits`` is
    what the request asked).  ``present``: the host has the hugetlb controller."""
    limits = resources.pop("hugepageLimits", None)
    if config.disable_hugetlb_controller:
        return
    if present:
        if limits:
            resources["hugepageLimits"] = limits
        return
    if not config.tolerate_missing_hugetlb_controller:
        raise errdefs.FailedPrecondition(
            "huge pages limits are specified but hugetlb cgroup controller is missing. Please set "
            "tolerate_missing_hugetlb_controller to `true` to ignore this error")
    if limits:
        log.warning("hugetlb cgroup controller is absent: skipping huge pages limits %s", limits)


def proc_paths(config: CRIConfig, linux: dict[str, Any], masked: list[str], readonly: list[str]) -> None:
    """``linux.maskedPaths`` / ``readonlyPaths`` of a container (before privileged clears them): the
    request's lists alone, none when it has none; with ``disable_proc_mount`` the defaults, untouched."""
    if config.disable_proc_mount:
        return
    for key, paths in (("maskedPaths", masked), ("readonlyPaths", readonly)):
        if paths:
            linux[key] = list(paths)
        else:
            linux.pop(key, None)


def device_ownership(config: CRIConfig, devices: list[tuple[dict[str, Any], dict[str, Any]]],
                     uid: int, gid: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The config's device entries, owned by the security context's non-zero ``uid``/``gid`` when
    ``device_ownership_from_security_context`` is set (the host node's owner otherwise)."""
    if not config.device_ownership_from_security_context:
        return devices
    out = []
    for entry, rule in devices:
        entry = dict(entry)
        if uid:
            entry["uid"] = uid
        if gid:
            entry["gid"] = gid
        out.append((entry, rule))
    return out


def _class(name: str, ctr_ann: Mapping[str, str], pod_ann: Mapping[str, str], keys: tuple[str, str, str]) -> str | None:
    ctr_key, pod_key, prefix = keys
    for ann, key in ((ctr_ann, ctr_key), (pod_ann, prefix + name), (pod_ann, pod_key)):
        if key in ann:
            return ann[key]
    return None


def refuse_resource_classes(config: CRIConfig, container_name: str, ctr_ann: Mapping[str, str],
                            pod_ann: Mapping[str, str]) -> None:
    """A container whose annotations ask for an RDT or blockio class: refused (pycontainerd enables
    neither), unless ``containerd.ignore_rdt_not_enabled_errors`` / ``ignore_blockio_not_enabled_errors``
    is set, when the class is dropped as containerd drops it."""
    rdt = _class(container_name, ctr_ann, pod_ann,
                 (RDT_CONTAINER_ANNOTATION, RDT_POD_ANNOTATION, RDT_POD_CONTAINER_PREFIX))
    if rdt is not None:
        if not config.containerd.ignore_rdt_not_enabled_errors:
            raise errdefs.FailedPrecondition(
                f"failed to set RDT class: RDT not enabled, class {rdt!r} of container {container_name!r} is not "
                "available (pycontainerd does not implement RDT; containerd.ignore_rdt_not_enabled_errors = true "
                "drops the class)")
        log.debug("container %s: RDT class %r dropped (ignore_rdt_not_enabled_errors)", container_name, rdt)
    blockio = _class(container_name, ctr_ann, pod_ann,
                     (BLOCKIO_CONTAINER_ANNOTATION, BLOCKIO_POD_ANNOTATION, BLOCKIO_POD_CONTAINER_PREFIX))
    if blockio:
        if not config.containerd.ignore_blockio_not_enabled_errors:
            raise errdefs.FailedPrecondition(
                f"failed to set blockio class: blockio disabled, refusing to set blockio class of container "
                f"{container_name!r} to {blockio!r} (pycontainerd does not implement blockio classes; "
                "containerd.ignore_blockio_not_enabled_errors = true drops the class)")
        log.debug("container %s: blockio class %r dropped (ignore_blockio_not_enabled_errors)", container_name,
                  blockio)


def host_has_selinux(selinux_fs: str = SELINUX_FS) -> bool:
    """Whether SELinux is enabled on this host (selinuxfs mounted)."""
    return os.path.isfile(os.path.join(selinux_fs, "enforce"))


def check_selinux(config: CRIConfig, *, host_has_selinux: bool) -> None:
    """``enable_selinux`` at the plugin's start: refused where SELinux would label (not implemented);
    on a host without SELinux a warning, as containerd gives, and nothing is labelled (so neither is
    ``selinux_category_range`` used)."""
    if not config.enable_selinux:
        return
    if host_has_selinux:
        raise errdefs.FailedPrecondition(
            f'plugins."io.containerd.grpc.v1.cri".enable_selinux = true is not supported: SELinux labelling of '
            f"pods and containers (and its selinux_category_range {config.selinux_category_range}) is not "
            "implemented by pycontainerd; set enable_selinux = false")
    log.warning('plugins."io.containerd.grpc.v1.cri".enable_selinux: SELinux is not supported on this host; '
                "no labels are applied (as containerd)")
