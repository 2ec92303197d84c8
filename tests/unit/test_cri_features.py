"""Status' runtime handler features (cri/features.py): recursive read-only mounts where the handler's
runc (or its external shim's ``-info``) lists ``rro`` and the kernel is 5.12+, as containerd 2.x decides;
fake runc and shim binaries here.  And CreateContainer's checks of ``Mount.recursive_read_only``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2

from pycontainerd import errdefs
from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.config.model import RuntimeConfig, RuntimeOptions
from pycontainerd.cri.containers import refuse_recursive_read_only
from pycontainerd.cri.features import HandlerFeatures, default_resolve, kernel_version, mount_options
from pycontainerd.typeurl import OCI_FEATURES


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


# -- external shims: containerd 2.0's ``<shim> -info`` ------------------------------------------------
def _fake_shim(path: Path, record: Path, *, rro: bool | None = True, exit_code: int = 0, raw: str = "") -> str:
    """A shim answering ``-info``: a RuntimeInfo whose features list ``rro`` (or not; None: no features),
    its stdin kept in ``record``; ``exit_code`` 2 plays a shim without -info (containerd 1.6's)."""
    if raw:
        body = f"sys.stdout.buffer.write({raw!r}.encode())"
    else:
        opts = ["ro", "rro"] if rro else ["ro"]
        features = "" if rro is None else (
            f"info.features.type_url = {OCI_FEATURES!r}\n"
            f"info.features.value = {json.dumps({'mountOptions': opts})!r}.encode()\n")
        body = (f"from pycontainerd.api.types import introspection_pb2\n"
                f"info = introspection_pb2.RuntimeInfo(name='fake')\n{features}"
                f"sys.stdout.buffer.write(info.SerializeToString())")
    path.write_text(f"#!{sys.executable}\nimport sys\nassert sys.argv[1:] == ['-info'], sys.argv\n"
                    f"open({str(record)!r}, 'ab').write(sys.stdin.buffer.read() + b'|')\n"
                    f"if {exit_code}:\n    print('flag provided but not defined: -info', file=sys.stderr)\n"
                    f"    sys.exit({exit_code})\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_external_shims_are_asked_with_info(tmp_path: Path) -> None:
    """A handler whose tasks run on an external shim binary (a non-runc type, or a runtime_path) has
    rro when the shim's -info features list it; a shim without -info, a failing one, garbage, no
    features or no binary at all: no.  The handler's options go on the shim's stdin."""
    record = tmp_path / "stdin"
    kinds: dict[str, dict[str, Any]] = {"yes": {}, "no": {"rro": False}, "nofeatures": {"rro": None},
                                        "old": {"exit_code": 2}, "garbage": {"raw": "\xff\xff not protobuf"}}
    shims = {name: _fake_shim(tmp_path / name, record, **kw) for name, kw in kinds.items()}
    runtimes = {
        "yes": RuntimeConfig(runtime_type="io.containerd.yes.v2", options=RuntimeOptions(
            extra={"ConfigPath": "/etc/yes.toml"})),
        "path": RuntimeConfig(runtime_path=shims["yes"],  # the runc type on another shim binary
                              options=RuntimeOptions(binary_name="/usr/sbin/runc")),
        "no": RuntimeConfig(runtime_type="io.containerd.no.v2"),
        "nofeatures": RuntimeConfig(runtime_type="io.containerd.nofeatures.v2"),
        "old": RuntimeConfig(runtime_path=shims["old"]),
        "garbage": RuntimeConfig(runtime_type="io.containerd.garbage.v2"),
        "missing": RuntimeConfig(runtime_type="io.containerd.missing.v2"),
    }

    def resolve(name: str) -> str | None:
        if name.startswith("/"):
            return name
        short = name.split(".")[-2]
        if short not in shims:
            raise errdefs.NotFound(f"runtime {name!r} binary not installed")
        return shims[short]

    features = HandlerFeatures(runtimes, None, kernel_release="6.1", resolve=resolve)
    assert _rro(features) == {"": False, "garbage": False, "missing": False, "no": False, "nofeatures": False,
                              "old": False, "path": True, "yes": True}
    assert asyncio.run(features.recursive_read_only("yes")) and not asyncio.run(features.recursive_read_only("old"))
    assert not asyncio.run(features.recursive_read_only("nope"))  # no such handler
    sent = [any_pb2.Any.FromString(b) if b else None for b in record.read_bytes().split(b"|")[:-1]]
    assert len(sent) == 6  # each shim asked once (the cached answer after)
    urls = {a.type_url for a in sent if a is not None}
    assert urls == {"containerd.runc.v1.Options", "runtimeoptions.v1.Options"}, urls
    runc = next(a for a in sent if a is not None and a.type_url == "containerd.runc.v1.Options")
    assert oci_pb2.Options.FromString(runc.value).binary_name == "/usr/sbin/runc"
    # the default resolver: the runc types are the daemon's own shim, the rest containerd's lookup
    assert default_resolve("io.containerd.runc.v2") is None
    with pytest.raises(errdefs.NotFound):
        default_resolve("io.containerd.pycd-no-such-shim.v2")


def test_refuse_recursive_read_only_as_containerd_2() -> None:
    """The checks and their order (containerd 2.x WithMounts): read-only first, then the handler's
    support (RROUnsupported), then private propagation; each message names the mount."""
    def refused(supported: bool = True, handler: str = "h", **kw: Any) -> str:
        m = pb.Mount(container_path="/v", host_path="/host/v", recursive_read_only=True, **kw)
        with pytest.raises(errdefs.InvalidArgument) as exc:
            refuse_recursive_read_only(m, handler, supported=supported)
        assert "mount '/v' (hostPath='/host/v')" in str(exc.value)
        return str(exc.value)

    assert "conflicts with RW mount" in refused(supported=False)
    assert "RROUnsupported: runtime handler 'h' does not support" in refused(supported=False, readonly=True,
                                                                           propagation=pb.PROPAGATION_BIDIRECTIONAL)
    assert "the default runtime handler does not" in refused(supported=False, handler="", readonly=True)
    assert "needs private propagation, got PROPAGATION_HOST_TO_CONTAINER" in refused(
        readonly=True, propagation=pb.PROPAGATION_HOST_TO_CONTAINER)
    refuse_recursive_read_only(pb.Mount(container_path="/v", host_path="/h", readonly=True, recursive_read_only=True),
                               "h", supported=True)
