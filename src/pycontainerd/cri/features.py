"""What Status tells the kubelet each runtime handler supports (CRI 1.30 ``RuntimeHandlerFeatures``),
and what CreateContainer checks a ``Mount.recursive_read_only`` against.

Recursive read-only mounts (``Mount.recursive_read_only``, runc's ``rro`` mount option, made with
``mount_setattr(2)``): as containerd 2.x decides it, true for a handler only when its runtime lists
``rro`` among the mount options it knows and the kernel is 5.12 or later.  What the runtime knows
comes from the shim that runs the handler's tasks (the task manager's choice: ``runtime_path``,
else ``runtime_type``):

- the daemon's own shim (the runc types without a ``runtime_path``): the mount options of
  ``<runc> features`` (``options.BinaryName``, else ``runc`` on PATH; runc 1.1+, an older runc has
  no ``features`` command, so no), which is what our shim's ``-info`` reports;
- an external shim binary: its ``-info`` answer (containerd 2.0's ``RuntimeInfo``, run with the
  handler's options on stdin, ``runtime.v2.info``), its ``features``' ``mountOptions``.  A shim
  without ``-info`` (containerd 1.6's ``containerd-shim-runc-v2``), one that fails or answers no
  features, or a runtime whose binary is not installed: no.  containerd 2.0-2.2 ask only
  ``io.containerd.runc.v2`` handlers this way and say no for every other type; 2.3 asks every shim,
  as here.

User namespaces: no handler (``security.refuse_user_namespace``).

containerd 1.6 reports no handlers and no features at all (and ignores ``recursive_read_only``:
its mounts are plain ``ro``).  The answer is probed once, at the first Status or the first
CreateContainer asking for a recursive read-only mount, and kept (containerd 2.x probes at start-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Mapping

from .. import errdefs
from ..api.cri.runtime.v1 import api_pb2 as pb
from ..config.model import RuntimeConfig
from ..runtime.v2.binary import resolve_runtime_path
from ..runtime.v2.info import runtime_features, runtime_info
from ..runtime.v2.manager import OWN_RUNTIMES
from ..threads import run_process
from .handlers import runtime_options

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
    return _listed_mount_options(doc)


def _listed_mount_options(doc: object) -> frozenset[str]:
    opts = doc.get("mountOptions") if isinstance(doc, dict) else None
    return frozenset(o for o in opts if isinstance(o, str)) if isinstance(opts, list) else frozenset()


def default_resolve(runtime_name: str) -> str | None:
    """The shim binary of a runtime as the task manager picks it without a ``runtime_paths`` table:
    None (the daemon's own shim) for the runc types, else containerd's lookup."""
    return None if runtime_name in OWN_RUNTIMES else resolve_runtime_path(runtime_name)


async def shim_mount_options(binary: str, options: tuple[str, bytes] | None) -> frozenset[str]:
    """The mount options an external shim's ``-info`` lists in its features; empty when it cannot tell."""
    try:
        doc = runtime_features(await runtime_info(binary, options))
    except errdefs.ContainerdError as exc:
        log.info("runtime features: %s", exc)
        return frozenset()
    if doc is None:
        log.info("runtime features: %s -info reports no OCI runtime features", binary)
    return _listed_mount_options(doc)


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
                 kernel_release: str | None = None, resolve: Callable[[str], str | None] | None = None) -> None:
        self.handlers: dict[str, RuntimeConfig | None] = {"": default, **{k: runtimes[k] for k in sorted(runtimes)}}
        self.kernel = kernel_version(kernel_release if kernel_release is not None else os.uname().release)
        # runtime name -> shim binary, None for the daemon's own (the task manager's ExternalShims.resolve)
        self.resolve = resolve or default_resolve
        self._answer: list[pb.RuntimeHandler] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_config(cls, config: object, resolve: Callable[[str], str | None] | None = None) -> HandlerFeatures:
        """From the CRI config (``containerd.runtimes``, ``default_runtime``); none when it has no runtimes."""
        runtimes = getattr(getattr(config, "containerd", None), "runtimes", None) or {}
        try:
            default = getattr(config, "default_runtime", None)
        except KeyError:  # a default_runtime_name naming no runtime (refused at start-up anyway)
            default = None
        return cls(runtimes, default, resolve=resolve)

    async def _rro(self, rt: RuntimeConfig | None, probed: dict[object, asyncio.Task[frozenset[str]]]) -> bool:
        if rt is None or self.kernel < RRO_KERNEL:
            return False
        name = rt.runtime_path or rt.runtime_type
        try:
            binary = await asyncio.to_thread(self.resolve, name)
        except errdefs.ContainerdError as exc:  # not installed: the handler's tasks cannot run at all
            log.info("runtime features: runtime %r: %s", name, exc)
            return False
        if binary is None:  # the daemon's own shim: its runc's features (what its -info reports)
            runc = rt.options.binary_name or "runc"
            if runc not in probed:
                probed[runc] = asyncio.ensure_future(runc_mount_options(runc))
            return RRO_OPTION in await probed[runc]
        typed = runtime_options(rt)
        options = (typed.type_url, typed.value) if typed is not None else None
        key = (binary, options)
        if key not in probed:
            probed[key] = asyncio.ensure_future(shim_mount_options(binary, options))
        return RRO_OPTION in await probed[key]

    async def runtime_handlers(self) -> list[pb.RuntimeHandler]:
        async with self._lock:
            if self._answer is None:
                # the handlers at once (a shim that does not answer costs its timeout once), each
                # runtime binary asked once
                probed: dict[object, asyncio.Task[frozenset[str]]] = {}
                rro = await asyncio.gather(*(self._rro(rt, probed) for rt in self.handlers.values()))
                self._answer = [pb.RuntimeHandler(name=name, features=pb.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=ok, user_namespaces=False))
                    for name, ok in zip(self.handlers, rro, strict=True)]
            return list(self._answer)

    async def recursive_read_only(self, handler: str) -> bool:
        """Whether the pods of ``handler`` (``""``: the default) can have recursive read-only mounts."""
        return any(h.name == handler and h.features.recursive_read_only_mounts
                   for h in await self.runtime_handlers())
