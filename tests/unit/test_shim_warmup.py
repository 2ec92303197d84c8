"""The launcher's memory preparation names code by "module:qualname" (``PER_SHIM_CODE``): a
renamed function would silently fall out of the packed code, so every name must resolve
with the modules the launcher imports."""

from __future__ import annotations

import subprocess
import sys


def test_per_shim_code_resolves_in_the_launchers_modules() -> None:
    # a fresh interpreter: the launcher's imports only (this test process has more loaded)
    script = (
        "from pycontainerd.shim import taskv2, ttrpc_loop, v2main\n"
        "from pycontainerd.shim import warmup\n"
        "missing = [p for p in warmup.PER_SHIM_CODE if warmup.resolve_code(p) is None]\n"
        "print(missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_with_nested_takes_comprehensions_and_closures() -> None:
    from pycontainerd.shim import warmup

    def outer() -> object:
        def inner() -> int:
            return 1

        return [inner() for _ in range(2)]

    names = {c.co_name for c in warmup.with_nested({outer.__code__})}
    assert names == {"outer", "inner", "<listcomp>"}
