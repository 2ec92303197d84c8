"""Status' runtime handler features (cri/features.py): recursive read-only mounts where the handler's
runc lists ``rro`` and the kernel is 5.12+, as containerd 2.x decides; fake runc binaries here."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pycontainerd.config.model import RuntimeConfig, RuntimeOptions
from pycontainerd.cri.features import HandlerFeatures, kernel_version, mount_options


def _fake_runc(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def _rro(features: HandlerFeatures) -> dict[str, bool]:
    return {h.name: h.features.recursive_read_only_mounts for h in asyncio.run(features.runtime_handlers())}


def test_kernel_version_and_mount_options() -> None:
    assert kernel_version("6.18.44-fc-v1300") == (6, 18)
    assert kernel_version("5.4.0-150-generic") == (5, 4)
    assert kernel_version("garbage") == (0, 0)
    assert mount_options(json.dumps({"mountOptions": ["ro", "rro", 3]})) == {"ro", "rro"}
    assert mount_options("not json") == frozenset()
    assert mount_options("[]") == frozenset()


def test_rro_needs_the_runc_option_and_kernel_512(tmp_path: Path) -> None:
    with_rro = _fake_runc(tmp_path / "runc-rro", """echo '{"mountOptions": ["ro", "rro", "rbind"]}'""")
    without = _fake_runc(tmp_path / "runc-old", """echo '{"mountOptions": ["ro", "rbind"]}'""")
    no_features = _fake_runc(tmp_path / "runc-1.0", "echo 'No help topic for features' >&2; exit 1")
    runtimes = {
        "rro": RuntimeConfig(options=RuntimeOptions(binary_name=with_rro)),
        "old": RuntimeConfig(options=RuntimeOptions(binary_name=without)),
        "ancient": RuntimeConfig(options=RuntimeOptions(binary_name=no_features)),
        "missing": RuntimeConfig(options=RuntimeOptions(binary_name=str(tmp_path / "nope"))),
        "kata": RuntimeConfig(runtime_type="io.containerd.kata.v2"),  # not runc: containerd asks the shim
    }
    got = _rro(HandlerFeatures(runtimes, runtimes["rro"], kernel_release="6.1.0-13-amd64"))
    assert got == {"": True, "ancient": False, "kata": False, "missing": False, "old": False, "rro": True}
    # the same runc on a kernel without mount_setattr(2)
    got = _rro(HandlerFeatures(runtimes, runtimes["rro"], kernel_release="5.10.0-28-amd64"))
    assert not any(got.values())


def test_probed_once(tmp_path: Path) -> None:
    count = tmp_path / "count"
    runc = _fake_runc(tmp_path / "runc", f"""echo x >> {count}; echo '{{"mountOptions": ["rro"]}}'""")
    rt = RuntimeConfig(options=RuntimeOptions(binary_name=runc))
    features = HandlerFeatures({"a": rt, "b": rt}, rt, kernel_release="6.1")

    async def twice() -> None:
        for _ in range(2):
            assert all(h.features.recursive_read_only_mounts for h in await features.runtime_handlers())
            assert not any(h.features.user_namespaces for h in await features.runtime_handlers())

    asyncio.run(twice())
    assert count.read_text().count("x") == 1  # one binary, one probe
