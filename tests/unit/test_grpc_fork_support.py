"""gRPC's fork handlers crash forked children (grpc#43055): the daemon turns them off before
grpc is imported; the client library leaves the user's environment alone."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, sys, importlib; importlib.import_module(sys.argv[1]); "
    "print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT', '<unset>'))"
)
# the variable must be set before grpc is imported in the daemon's process
BEFORE_GRPC = (
    "import builtins, os\n"
    "seen = []\n"
    "real = builtins.__import__\n"
    "def hook(name, *a, **k):\n"
    "    if name == 'grpc' or name.startswith('grpc.'):\n"
    "        seen.append(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))\n"
    "    return real(name, *a, **k)\n"
    "builtins.__import__ = hook\n"
    "import pycontainerd.daemon.server\n"
    "print(seen[0] if seen else '<grpc not imported>')\n"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    env.update(extra)
    return env


def _probe(module: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, module], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_client_library_leaves_the_environment_alone() -> None:
    assert _probe("pycontainerd", _env()) == "<unset>"
    assert _probe("pycontainerd.client", _env()) == "<unset>"


def test_the_daemon_disables_grpc_fork_support() -> None:
    assert _probe("pycontainerd.daemon.__main__", _env()) == "false"
    assert _probe("pycontainerd.shim.main", _env()) == "false"


def test_the_daemon_server_never_imports_grpc() -> None:
    # stronger than setting the variable before grpc is imported: the daemon serves with its
    # own server (pycontainerd.rpc), so grpc's fork handlers never exist in its process
    out = subprocess.run([sys.executable, "-c", BEFORE_GRPC], env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "<grpc not imported>"


def test_a_user_setting_is_kept() -> None:
    assert _probe("pycontainerd.daemon.__main__", _env(GRPC_ENABLE_FORK_SUPPORT="true")) == "true"
