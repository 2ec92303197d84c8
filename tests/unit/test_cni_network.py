"""pycontainerd.cni.CNI driving scripted plugins (small sh scripts, real processes, no root).

Each fake plugin logs its call (command, env, stdin) and answers from files the test writes:
``<type>.<COMMAND>.out`` on stdout and ``<type>.<COMMAND>.rc`` as exit status.  The real
plugins are exercised in tests/integration/test_cri_cni.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pycontainerd import errdefs
from pycontainerd.cni import CNI, CapabilityArgs, PluginError, PodNetwork, PodNetworking, PortMapping

FAKE = r"""#!/bin/sh
t=$(basename "$0")
d=__DIR__
n=$(wc -l < "$d/calls.log")
stdin=$(cat)
echo "$CNI_COMMAND $t $CNI_IFNAME" >> "$d/calls.log"
printf '%s' "$stdin" > "$d/call-$n.json"
env | grep '^CNI_' | sort > "$d/call-$n.env"
[ -f "$d/$t.$CNI_COMMAND.sleep" ] && exec sleep "$(cat "$d/$t.$CNI_COMMAND.sleep")"
[ -f "$d/$t.$CNI_COMMAND.out" ] && cat "$d/$t.$CNI_COMMAND.out"
if [ -f "$d/$t.$CNI_COMMAND.rc" ]; then echo "stderr of $t" >&2; exit "$(cat "$d/$t.$CNI_COMMAND.rc")"; fi
exit 0
"""


def _result(version: str, ip: str, ifname: str = "eth0", netns: str = "/ns") -> dict[str, Any]:
    return {
        "cniVersion": version,
        "interfaces": [{"name": "br0"}, {"name": ifname, "sandbox": netns}],
        "ips": [{"address": ip, "interface": 1}],
    }


class Env:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp
        self.bin = tmp / "bin"
        self.conf = tmp / "conf"
        self.log = tmp / "log"
        self.state = tmp / "state"
        for d in (self.bin, self.conf, self.log):
            d.mkdir()
        (self.log / "calls.log").write_text("")
        for t in ("loopback", "bridge", "portmap", "failing"):
            self.plugin(t)
        self.answer("loopback", "ADD", _result("0.3.1", "127.0.0.1/8", "lo"))

    def plugin(self, name: str) -> None:
        p = self.bin / name
        p.write_text(FAKE.replace("__DIR__", str(self.log)))
        p.chmod(0o755)

    def answer(self, plugin: str, command: str, out: Any = None, rc: int | None = None) -> None:
        if out is not None:
            (self.log / f"{plugin}.{command}.out").write_text(out if isinstance(out, str) else json.dumps(out))
        if rc is not None:
            (self.log / f"{plugin}.{command}.rc").write_text(str(rc))

    def conflist(self, plugins: list[dict[str, Any]], version: str = "1.0.0", name: str = "pods") -> None:
        doc = {"cniVersion": version, "name": name, "plugins": plugins}
        (self.conf / "10-pods.conflist").write_text(json.dumps(doc))

    def cni(self, **kw: Any) -> CNI:
        return CNI(
            conf_dir=self.conf, bin_dirs=[str(self.bin)], cache_dir=self.state, env={"PATH": "/usr/bin:/bin"}, **kw
        )

    def calls(self) -> list[str]:
        return (self.log / "calls.log").read_text().splitlines()

    def stdin(self, n: int) -> dict[str, Any]:
        return json.loads((self.log / f"call-{n}.json").read_text())

    def env(self, n: int) -> dict[str, str]:
        return dict(line.split("=", 1) for line in (self.log / f"call-{n}.env").read_text().splitlines())

    def cache_files(self) -> list[str]:
        d = self.state / "results"
        return sorted(os.listdir(d)) if d.exists() else []


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


POD = PodNetwork(
    sandbox_id="sb1",
    netns="/ns",
    namespace="default",
    name="web",
    uid="u1",
    capabilities=CapabilityArgs(port_mappings=(PortMapping(8080, 80),)),
)
BRIDGE_PORTMAP: list[dict[str, Any]] = [
    {"type": "bridge", "k": 1},
    {"type": "portmap", "capabilities": {"portMappings": True}},
]


def test_setup_chains_results_and_teardown_after_restart_uses_the_cache(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", _result("1.0.0", "10.9.0.5/24"))

    res = asyncio.run(env.cni().setup(POD))
    assert res.pod_ip == "10.9.0.5" and res.additional_ips == ()
    assert [(a.network, a.ifname) for a in res.attachments] == [("cni-loopback", "lo"), ("pods", "eth0")]
    assert [(ifn, str(ip.ip)) for ifn, ip in res.ips] == [("lo", "127.0.0.1"), ("eth0", "10.9.0.5")]
    assert env.calls() == ["ADD loopback lo", "ADD bridge eth0", "ADD portmap eth0"]

    assert env.env(1) == {
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u1",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "sb1",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/ns",
        "CNI_PATH": str(env.bin),
    }
    bridge_in, portmap_in = env.stdin(1), env.stdin(2)
    assert bridge_in == {"type": "bridge", "k": 1, "name": "pods", "cniVersion": "1.0.0"}
    assert portmap_in["prevResult"]["ips"] == [{"address": "10.9.0.5/24", "interface": 1}]
    assert portmap_in["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert env.cache_files() == ["cni-loopback-sb1-lo", "pods-sb1-eth0"]

    # a new daemon, and a teardown that knows only the sandbox id and netns
    asyncio.run(env.cni().teardown(PodNetwork(sandbox_id="sb1", netns="/ns")))
    assert env.calls()[3:] == ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]
    del_portmap = env.stdin(3)
    assert del_portmap["prevResult"]["ips"] == [{"address": "10.9.0.5/24", "interface": 1}]
    assert del_portmap["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080  # from the cache
    assert env.env(3)["CNI_ARGS"].endswith("K8S_POD_UID=u1")
    assert "prevResult" not in env.stdin(5)  # the 0.3.1 loopback list gets none on DEL (libcni)
    assert env.cache_files() == []

    # idempotent
    asyncio.run(env.cni().teardown(PodNetwork(sandbox_id="sb1", netns="")))


def test_a_failing_plugin_names_itself_and_everything_is_deleted(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", {"cniVersion": "1.0.0", "code": 999, "msg": "iptables said no"}, rc=1)

    with pytest.raises(PluginError) as ei:
        asyncio.run(env.cni().setup(POD))
    msg = str(ei.value)
    assert 'CNI plugin "portmap" ADD on network "pods" (eth0) for sb1 failed: iptables said no [code 999]' in msg
    assert "stderr of portmap" in msg
    assert ei.value.plugin == "portmap" and ei.value.error is not None and ei.value.error.code == 999
    assert env.calls()[3:] == ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]
    assert env.cache_files() == []


def test_a_missing_plugin_fails_setup_and_status(env: Env) -> None:
    env.conflist([{"type": "bridge"}, {"type": "nosuch"}])
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    with pytest.raises(errdefs.FailedPrecondition, match=r'plugins not found in .*: nosuch \(network pods\)'):
        asyncio.run(env.cni().status())
    with pytest.raises(errdefs.FailedPrecondition, match=r'CNI plugin "nosuch" ADD on network "pods".*not found in'):
        asyncio.run(env.cni().setup(POD))
    assert env.calls()[2:] == ["DEL bridge eth0", "DEL loopback lo"]  # the missing one is skipped
    assert env.cache_files() == []


def test_status_without_config(env: Env) -> None:
    with pytest.raises(errdefs.FailedPrecondition, match="no network config"):
        asyncio.run(env.cni().status())
    env.conflist(BRIDGE_PORTMAP)
    asyncio.run(env.cni().status())


def test_failed_del_keeps_the_cache_for_a_retry(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", _result("1.0.0", "10.9.0.5/24"))
    asyncio.run(env.cni().setup(POD))
    env.answer("bridge", "DEL", "", rc=2)
    with pytest.raises(PluginError, match=r'"bridge" DEL.*exit status 2'):
        asyncio.run(env.cni().teardown(POD))
    assert env.calls()[3:] == ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]  # went on after the error
    assert env.cache_files() == ["pods-sb1-eth0"]
    (env.log / "bridge.DEL.rc").unlink()
    asyncio.run(env.cni().teardown(POD))
    assert env.cache_files() == []


def test_teardown_reaches_a_network_gone_from_the_config(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", _result("1.0.0", "10.9.0.5/24"))
    asyncio.run(env.cni().setup(POD))
    env.conflist([{"type": "bridge"}], name="other")
    asyncio.run(env.cni().teardown(POD))
    assert sorted(env.calls()[3:]) == sorted(
        ["DEL bridge eth0", "DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]
    )
    assert env.cache_files() == []


def test_check_runs_every_plugin_with_the_cached_result(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", _result("1.0.0", "10.9.0.5/24"))
    cni = env.cni()
    asyncio.run(cni.setup(POD))
    asyncio.run(cni.check(POD))
    assert env.calls()[3:] == ["CHECK bridge eth0", "CHECK portmap eth0"]  # loopback (0.3.1) has no CHECK
    assert env.stdin(3)["prevResult"]["ips"][0]["address"] == "10.9.0.5/24"
    env.answer("portmap", "CHECK", {"code": 100, "msg": "DNAT rule missing"}, rc=1)
    with pytest.raises(PluginError, match="DNAT rule missing"):
        asyncio.run(cni.check(POD))
    with pytest.raises(errdefs.NotFound, match="no cached result"):
        asyncio.run(cni.check(PodNetwork(sandbox_id="other", netns="/ns")))


def test_a_bad_result_fails_setup(env: Env) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", "{this is not json")
    with pytest.raises(errdefs.Unknown, match='CNI plugin "bridge" ADD on network "pods": invalid JSON result'):
        asyncio.run(env.cni().setup(POD))
    assert env.calls()[2:] == ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]


def test_no_ip_on_eth0_fails_setup(env: Env) -> None:
    env.conflist([{"type": "bridge"}])
    env.answer("bridge", "ADD", {"cniVersion": "1.0.0"})
    with pytest.raises(errdefs.FailedPrecondition, match="no IP address for eth0"):
        asyncio.run(env.cni().setup(POD))
    assert env.cache_files() == []


def test_a_hung_plugin_is_killed_at_the_timeout(env: Env) -> None:
    env.conflist([{"type": "bridge"}])
    (env.log / "bridge.ADD.sleep").write_text("30")
    start = time.monotonic()
    with pytest.raises(PluginError, match=r'"bridge" ADD .*timed out after 0.5s'):
        asyncio.run(env.cni(plugin_timeout=0.5).setup(POD))
    assert time.monotonic() - start < 10


def test_legacy_versions_end_to_end(env: Env) -> None:
    env.conflist([{"type": "bridge"}], version="0.2.0")
    env.answer("bridge", "ADD", {"cniVersion": "0.2.0", "ip4": {"ip": "10.9.0.7/24"}})
    res = asyncio.run(env.cni().setup(POD))
    assert res.pod_ip == "10.9.0.7"
    asyncio.run(env.cni().teardown(POD))
    assert "prevResult" not in env.stdin(2)


def test_teardown_uses_the_config_the_pod_was_added_with(env: Env, tmp_path: Path) -> None:
    env.conflist(BRIDGE_PORTMAP)
    env.answer("bridge", "ADD", _result("1.0.0", "10.9.0.5/24"))
    env.answer("portmap", "ADD", _result("1.0.0", "10.9.0.5/24"))
    ns = tmp_path / "ns"
    ns.write_text("")
    pod = PodNetwork(sandbox_id="sb1", netns=str(ns))
    asyncio.run(env.cni().setup(pod))
    env.conflist([{"type": "failing"}])  # same network name, other plugins
    ns.unlink()  # and the namespace is gone
    asyncio.run(env.cni().teardown(pod))
    assert env.calls()[3:] == ["DEL portmap eth0", "DEL bridge eth0", "DEL loopback lo"]
    assert env.env(3)["CNI_NETNS"] == ""

    # a config that no longer parses does not keep a pod from being torn down
    env.answer("failing", "ADD", _result("1.0.0", "10.9.0.6/24"))
    asyncio.run(env.cni().setup(POD))
    (env.conf / "10-pods.conflist").write_text("{broken")
    asyncio.run(env.cni().teardown(POD))
    assert env.calls()[-2:] == ["DEL failing eth0", "DEL loopback lo"]
    assert env.cache_files() == []


def test_cni_is_pod_networking(env: Env) -> None:
    net: PodNetworking = env.cni()  # mypy checks the structure
    assert callable(net.setup)
