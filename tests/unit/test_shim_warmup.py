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


def test_pack_functions_gives_module_functions_and_methods_fresh_equal_copies() -> None:
    import sys
    import types

    from pycontainerd.shim import warmup

    module = types.ModuleType("pycd_test_pack_functions")
    exec(
        "def f(a, b=2, *, c=3):\n"
        "    'doc'\n"
        "    return a + b + c\n"
        "class C:\n"
        "    def m(self, x):\n"
        "        return super().__repr__() and x * 2\n"
        "    def cold(self):\n"
        "        return 0\n",
        module.__dict__,
    )
    module.f.marker = "kept"
    old_f, old_m, old_cold = module.f, module.C.m, module.C.cold
    registry = [old_f]  # a reference elsewhere keeps the old object, which still works
    sys.modules[module.__name__] = module
    try:
        assert warmup.pack_functions({old_f.__code__, old_m.__code__}) == 2
    finally:
        del sys.modules[module.__name__]
    assert module.f is not old_f and module.C.m is not old_m
    assert module.C.cold is old_cold  # not hot: left alone
    assert module.f(1) == old_f(1) == 6 and module.f(1, 1, c=1) == 3
    assert module.C().m(4) == 8  # the class cell (super()) is the same
    for attr in ("__name__", "__qualname__", "__module__", "__doc__", "__defaults__", "__kwdefaults__"):
        assert getattr(module.f, attr) == getattr(old_f, attr)
    assert module.f.marker == "kept"
    assert registry[0] is old_f and registry[0](1) == 6


def test_hot_code_is_the_second_rounds_without_the_rehearsals_own() -> None:
    # a fresh interpreter: the launcher's imports only; the first round's imports and regex
    # compilations are not in the profiled second one, nor is this module's rehearsal code
    script = (
        "from pycontainerd.shim import taskv2, ttrpc_loop, v2main\n"
        "from pycontainerd.shim import service, warmup\n"
        "hot = warmup.hot_code()\n"
        "files = {c.co_filename.rsplit('/', 1)[-1] for c in hot}\n"
        "print(service.Service.create.__code__ in hot, warmup.__file__ in {c.co_filename for c in hot},\n"
        "      '_compiler.py' in files, 'tempfile.py' in files)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "False", "False"]
