"""Importing pycontainerd turns gRPC's fork handlers off (they crash forked children, grpc#43055)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_import_disables_grpc_fork_support() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run(
        [sys.executable, "-c", "import pycontainerd, os; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "false"


def test_a_user_setting_is_kept() -> None:
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="true")
    out = subprocess.run(
        [sys.executable, "-c", "import pycontainerd, os; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "true"
