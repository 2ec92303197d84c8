"""What Status tells the kubelet each runtime handler supports (CRI 1.30 ``RuntimeHandlerFeatures``).

Recursive read-only mounts (``Mount.recursive_read_only``, runc's ``rro`` mount option, made with
``mount_setattr(2)``): as containerd 2.x decides it, true for a handler only when its runtime lists
``rro`` among the mount options it knows and the kernel is 5.12 or later.  For the runc types the
runtime is the handler's runc (``options.BinaryName``, else ``runc`` on PATH) and what it knows is
``runc features``' ``mountOptions`` (runc 1.1+; an older runc has no ``features`` command, so no).
Other runtime types (external shims) answer no: containerd asks such a shim with ``-info``, which
pycontainerd does not do.  User namespaces: no handler (``security.refuse_user_namespace``).

containerd 1.6 reports no handlers and no features at all.  The answer is probed once, at the
first Status, and kept (containerd 2.x probes at start-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping

from ..api.cri.runtime.v1 import api_pb2 as pb
from ..config.model import RUNC_TYPES, RuntimeConfig
from ..threads import run_process

log = logging.getLogger("pycontainerd.cri")

RRO_KERNEL = (5, 12)
RRO_OPTION = "rro"
PROBE_TIMEOUT = 10.0


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.1.0-13-amd64``; (0, 0) if unreadable."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def mount_options(features_json: bytes | str) -> frozenset[str]:
    """The ``mountOptions`` of an OCI runtime's ``features`` output (empty when it is not that JSON)."""
    try:
        doc = json.loads(features_json)
    except ValueError:
        return frozenset()
    opts = doc.get("mountOptions") if isinstance(doc, dict) else None
    return frozenset(o for o in opts if isinstance(o, str)) if isinstance(opts, list) else frozenset()


async def runc_mount_options(binary: str) -> frozenset[str]:
    """What ``<binary> features`` lists as mount options; empty when it cannot tell."""
    try:
        done = await run_process([binary, "features"], limit=PROBE_TIMEOUT)  # off the loop, our fds closed
    except OSError as exc:
        log.info("runtime features: cannot run %s: %s", binary, exc)
        return frozenset()
    except subprocess.TimeoutExpired:
        log.warning("runtime features: %s features did not answer in %.0f s", binary, PROBE_TIMEOUT)
        return frozenset()
    if done.returncode != 0:
        log.info("runtime features: %s features exited %s (runc before 1.1 has no features command)",
                 binary, done.returncode)
        return frozenset()
    return mount_options(done.stdout)


class HandlerFeatures:
    """The Status ``runtime_handlers`` list: ``""`` (the default handler) then the configured ones by name."""

    def __init__(self, runtimes: Mapping[str, RuntimeConfig], default: RuntimeConfig | None,
                 kernel_release: str | None = None) -> None:
        self.handlers: dict[str, RuntimeConfig | None] = {"": default, **{k: runtimes[k] for k in sorted(runtimes)}}
        self.kernel = kernel_version(kernel_release if kernel_release is not None else os.uname().release)
        self._answer: list[pb.RuntimeHandler] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_config(cls, config: object) -> HandlerFeatures:
        """From the CRI config (``containerd.runtimes``, ``default_runtime``); none when it has no runtimes."""
        runtimes = getattr(getattr(config, "containerd", None), "runtimes", None) or {}
        try:
            default = getattr(config, "default_runtime", None)
        except KeyError:  # a default_runtime_name naming no runtime (refused at start-up anyway)
            default = None
        return cls(runtimes, default)

    async def _rro(self, rt: RuntimeConfig | None, probed: dict[str, frozenset[str]]) -> bool:
        if rt is None or rt.runtime_type not in RUNC_TYPES or self.kernel < RRO_KERNEL:
            return False
        binary = rt.options.binary_name or "runc"
        if binary not in probed:
            probed[binary] = await runc_mount_options(binary)
        return RRO_OPTION in probed[binary]

    async def runtime_handlers(self) -> list[pb.RuntimeHandler]:
        async with self._lock:
            if self._answer is None:
                probed: dict[str, frozenset[str]] = {}
                self._answer = [pb.RuntimeHandler(name=name, features=pb.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=await self._rro(rt, probed), user_namespaces=False))
                    for name, rt in self.handlers.items()]
            return list(self._answer)
