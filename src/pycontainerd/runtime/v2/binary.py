"""Which shim binary serves a runtime, and the command lines containerd runs it with (pure).

Runtime names follow containerd 1.6's rules (``runtime/v2/manager.go`` ``resolveRuntimePath``):

- an absolute path is the shim binary itself (``ctr run --runtime /usr/bin/containerd-shim-runc-v2``);
  it must exist;
- any other name containing ``/`` is refused;
- ``io.containerd.<name>.<version>`` becomes the binary ``containerd-shim-<name>-<version>``
  (the last two dot-separated parts), looked up on ``PATH`` and then beside the daemon's own
  executable.

The shim commands (containerd's ``shim.Command``)::

    <binary> -namespace NS -address <daemon grpc socket> -publish-binary <daemon binary> -id ID [-debug] start
    <binary> -namespace NS -address ... -publish-binary ... -id ID -bundle BUNDLE [-debug] delete

both run in the bundle directory with ``TTRPC_ADDRESS=<grpc socket>.ttrpc`` in the environment
(where the shim sends its events, ``containerd.services.events.ttrpc.v1.Events/Forward``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ... import errdefs

BINARY_PREFIX = "containerd-shim"
TTRPC_SUFFIX = ".ttrpc"
# the runtimes the daemon's own launcher serves (unless the config names a binary for one)
OWN_RUNTIMES = frozenset({"io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux"})


def binary_name(runtime: str) -> str:
    """``io.containerd.runc.v2`` -> ``containerd-shim-runc-v2``; "" when the name has fewer than two parts."""
    parts = runtime.split(".")
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return ""
    return f"{BINARY_PREFIX}-{parts[-2]}-{parts[-1]}"


def _invalid(runtime: str) -> errdefs.InvalidArgument:
    return errdefs.InvalidArgument(
        f"invalid runtime name {runtime}, correct runtime name should be either format like "
        "`io.containerd.runc.v2` or a full path to the binary"
    )


def resolve_runtime_path(runtime: str, *, search_path: str | None = None, self_dir: str = "") -> str:
    """The shim binary for ``runtime`` (absolute path), by containerd 1.6's rules.

    ``search_path`` is the ``PATH`` to look in (the process's own when None); ``self_dir`` the
    directory of the daemon's executable, searched last.  NotFound when no binary exists."""
    if not runtime:
        raise errdefs.InvalidArgument("no runtime name: the container's runtime name is empty")
    if os.path.isabs(runtime):
        if not os.path.exists(runtime):
            raise errdefs.NotFound(
                f"failed to start shim: failed to resolve runtime path: invalid custom binary path: "
                f"stat {runtime}: no such file or directory: not found"
            )
        return runtime
    if "/" in runtime:
        raise _invalid(runtime)
    name = binary_name(runtime)
    if not name:
        raise _invalid(runtime)
    import shutil  # at first use: shutil imports bz2 and lzma (W6, idle PSS)

    found = shutil.which(name, path=search_path if search_path is not None else os.environ.get("PATH", os.defpath))
    if found is None and self_dir:
        candidate = os.path.join(self_dir, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found = candidate
    if found is None:
        raise errdefs.NotFound(
            f"failed to start shim: failed to resolve runtime path: runtime {runtime!r} binary not installed "
            f"{name!r}: file does not exist: not found"
        )
    return os.path.abspath(found)


def ttrpc_address(grpc_address: str) -> str:
    """Where the daemon serves ttrpc (shim events): beside its gRPC socket, as containerd does."""
    return grpc_address.removeprefix("unix://") + TTRPC_SUFFIX


def socket_path(address: str) -> str:
    """The filesystem (or ``\\0``-prefixed abstract) path of a ``unix://`` address or bare path."""
    return address.removeprefix("unix://")


def common_args(*, namespace: str, address: str, publish_binary: str, container_id: str) -> list[str]:
    return ["-namespace", namespace, "-address", address, "-publish-binary", publish_binary, "-id", container_id]


def start_args(
    binary: str, *, namespace: str, address: str, publish_binary: str, container_id: str, debug: bool = False
) -> list[str]:
    args = [binary, *common_args(namespace=namespace, address=address, publish_binary=publish_binary,
                                 container_id=container_id)]  # fmt: skip
    if debug:
        args.append("-debug")
    args.append("start")
    return args


def delete_args(
    binary: str,
    *,
    namespace: str,
    address: str,
    publish_binary: str,
    container_id: str,
    bundle: str,
    debug: bool = False,
) -> list[str]:
    args = [binary, *common_args(namespace=namespace, address=address, publish_binary=publish_binary,
                                 container_id=container_id), "-bundle", bundle]  # fmt: skip
    if debug:
        args.append("-debug")
    args.append("delete")
    return args


def shim_env(
    grpc_address: str,
    base: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    *,
    events_address: str = "",
) -> dict[str, str]:
    """The shim's environment: the daemon's, plus ``TTRPC_ADDRESS`` (``events_address``, by
    default beside the gRPC socket) and ``GOMAXPROCS=2`` unless set, as containerd 1.6 gives
    its Go shims."""
    env = dict(os.environ if base is None else base)
    env["TTRPC_ADDRESS"] = events_address or ttrpc_address(grpc_address)
    env.setdefault("GOMAXPROCS", "2")
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env
