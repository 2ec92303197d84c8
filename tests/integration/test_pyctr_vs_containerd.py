"""Issue 2: pyctr and the client library work against a real containerd as well as ours."""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest

from pycontainerd import errdefs
from pycontainerd.client import Client
from tests.fixtures.containerd import Containerd

from .daemon import BIN, Daemon

pytestmark = pytest.mark.root


def pyctr(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(BIN / "pyctr"), "-a", address, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("target", ["ours", "containerd"])
def test_pyctr_foundation_commands(target: str, daemon: Daemon, shared_containerd: Containerd) -> None:
    address = daemon.address if target == "ours" else shared_containerd.address
    out = pyctr(address, "version").stdout
    assert re.search(r"Server:\n\s+Version:\s+\S+", out)
    plugins = pyctr(address, "plugins", "ls").stdout
    assert re.search(r"^io\.containerd\.grpc\.v1\s+namespaces\s+\S+\s+ok", plugins, re.M)
    assert re.search(r"^io\.containerd\.snapshotter\.v1\s+overlayfs\s+linux/amd64\s+ok", plugins, re.M)
    name = f"pyctr-{target}"
    pyctr(address, "namespaces", "create", name, "a=b")
    assert re.search(rf"^{name}\s+a=b\s*$", pyctr(address, "namespaces", "ls").stdout, re.M)
    pyctr(address, "namespaces", "label", name, "c=d")
    assert re.search(rf"^{name}\s+a=b,c=d\s*$", pyctr(address, "namespaces", "ls").stdout, re.M)
    r = pyctr(address, "namespaces", "create", name, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    pyctr(address, "namespaces", "rm", name)
    assert name not in pyctr(address, "namespaces", "ls", "-q").stdout.split()


@pytest.mark.parametrize("target", ["ours", "containerd"])
def test_client_errors_are_the_same_kinds(target: str, daemon: Daemon, shared_containerd: Containerd) -> None:
    address = daemon.address if target == "ours" else shared_containerd.address

    async def go() -> None:
        async with Client(address, "default") as c:
            with pytest.raises(errdefs.InvalidArgument):
                await c.namespaces.create("bad..name")
            with pytest.raises(errdefs.NotFound):
                await c.namespaces.delete("does-not-exist")
            await c.namespaces.create("kinds")
            with pytest.raises(errdefs.AlreadyExists):
                await c.namespaces.create("kinds")
            await c.namespaces.delete("kinds")

    asyncio.run(go())


def test_ctr_plugins_table_matches_containerd_shape(daemon: Daemon, shared_containerd: Containerd) -> None:
    """The plugin types and ids that tools filter on exist in both."""
    ours = daemon.ctr("plugins", "ls").stdout
    theirs = subprocess.run(["ctr", "-a", shared_containerd.address, "plugins", "ls"], capture_output=True,
                            text=True, check=True).stdout
    for type_, id_ in [("io.containerd.content.v1", "content"), ("io.containerd.snapshotter.v1", "overlayfs"),
                       ("io.containerd.snapshotter.v1", "native"), ("io.containerd.differ.v1", "walking"),
                       ("io.containerd.gc.v1", "scheduler"), ("io.containerd.grpc.v1", "tasks"),
                       ("io.containerd.runtime.v2", "task"), ("io.containerd.runtime.v1", "linux"),
                       ("io.containerd.event.v1", "exchange")]:
        pat = rf"^{re.escape(type_)}\s+{re.escape(id_)}\s"
        assert re.search(pat, theirs, re.M), (type_, id_)
        assert re.search(pat, ours, re.M), (type_, id_)
