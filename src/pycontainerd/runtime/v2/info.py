"""What a runtime v2 shim says about itself: ``<shim binary> -info`` (containerd 2.0's ``RuntimeInfo``).

The shim protocol's command-like flag ``-info`` (containerd 2.0, ``core/runtime/v2`` README): the shim
reads the runtime options (a protobuf ``Any``, empty for none) on stdin, writes one
``containerd.types.RuntimeInfo`` (``api/types/introspection.proto``: name, version, the options it
took, ``features``, annotations) on stdout and exits.  containerd's task manager runs it for
``Introspection.PluginInfo(io.containerd.runtime.v2, task, RuntimeRequest)``, which its CRI uses to
learn what each runtime handler supports.  ``features`` is an ``Any`` holding the OCI runtime's
``features`` document (runtime-spec ``features.md``) as JSON, type
``types.containerd.io/opencontainers/runtime-spec/1/features/Features``.

A shim from before 2.0 (containerd 1.6's ``containerd-shim-runc-v2``) has no such flag: Go's flag
package prints its usage and exits 2, which is an error here (FailedPrecondition), as in containerd.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ... import errdefs
from ...api.types import introspection_pb2
from ...threads import run_process
from ...typeurl import OCI_FEATURES as FEATURES_TYPE_URL

INFO_TIMEOUT = 10.0  # containerd bounds it by the caller's context only; a hung shim must not hold us
_STDERR_SHOWN = 300


async def runtime_info(binary: str, options: tuple[str, bytes] | None = None, *,
                       limit: float = INFO_TIMEOUT) -> introspection_pb2.RuntimeInfo:
    """Run ``binary -info`` with ``options`` ((type url, value), as a shim's ``start`` gets them) on
    its stdin; its answer.  FailedPrecondition when the shim has no ``-info`` (or fails, or answers
    something that is no RuntimeInfo), DeadlineExceeded when it does not answer in ``limit`` seconds."""
    stdin = any_pb2.Any(type_url=options[0], value=options[1]).SerializeToString() if options else b""
    try:
        # in a worker thread with close_fds, as the shim manager runs shim commands: no descriptor of ours leaks
        done = await run_process([binary, "-info"], input=stdin, limit=limit, cwd="/")
    except subprocess.TimeoutExpired as exc:
        raise errdefs.DeadlineExceeded(f"{binary} -info: no answer in {limit:.0f} s") from exc
    except OSError as exc:
        raise errdefs.from_oserror(exc, f"run {binary} -info") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise errdefs.FailedPrecondition(
            f"{binary} -info exited {done.returncode} (a shim before containerd 2.0 has no -info): "
            f"{(err[0] if err else '')[:_STDERR_SHOWN]!r}")
    info = introspection_pb2.RuntimeInfo()
    try:
        info.ParseFromString(done.stdout)
    except DecodeError as exc:
        raise errdefs.FailedPrecondition(f"{binary} -info: its output is not a containerd.types.RuntimeInfo: "
                                         f"{exc}") from exc
    return info


def runtime_features(info: introspection_pb2.RuntimeInfo) -> dict[str, Any] | None:
    """The OCI runtime ``features`` document a RuntimeInfo carries; None when it has none (containerd's
    runc shim leaves it out when its runc has no ``features`` command).  FailedPrecondition when it
    is of another type or not a JSON object."""
    if not info.HasField("features"):
        return None
    url = info.features.type_url
    if url.removeprefix("/") != FEATURES_TYPE_URL:
        raise errdefs.FailedPrecondition(f"runtime info of {info.name or 'a shim'}: features of type {url!r}, "
                                         f"want {FEATURES_TYPE_URL!r}")
    try:
        doc = json.loads(info.features.value)
    except ValueError as exc:
        raise errdefs.FailedPrecondition(f"runtime info of {info.name or 'a shim'}: features are not JSON: "
                                         f"{exc}") from exc
    if not isinstance(doc, dict):
        raise errdefs.FailedPrecondition(f"runtime info of {info.name or 'a shim'}: features are not a JSON object")
    return doc
