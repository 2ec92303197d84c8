"""CNI network config lists, results and plugin inputs: the pure parts of pycontainerd.cni."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pycontainerd import errdefs
from pycontainerd.cni import config, invoke, result
from pycontainerd.cni.network import select_pod_ips

BRIDGE_LIST = {
    "cniVersion": "1.0.0",
    "name": "pods",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True, "dns": False}},
    ],
}


def _b(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --- config -------------------------------------------------------------------------------------


def test_conflist_parses_plugins_in_order_with_capabilities() -> None:
    nc = config.parse_conflist(_b(BRIDGE_LIST), "10-pods.conflist")
    assert (nc.name, nc.cni_version) == ("pods", "1.0.0")
    assert [p.type for p in nc.plugins] == ["bridge", "portmap", "bandwidth"]
    assert nc.plugins[0].capabilities == frozenset()
    assert nc.plugins[1].capabilities == {"portMappings"}
    assert nc.plugins[2].capabilities == {"bandwidth"}  # "dns": false is not asked for
    assert nc.supports_check


def test_single_plugin_conf_is_a_list_of_one() -> None:
    nc = config.parse_file("10-x.conf", _b({"cniVersion": "0.3.1", "name": "x", "type": "bridge", "foo": 1}))
    assert [p.type for p in nc.plugins] == ["bridge"]
    assert nc.plugins[0].raw["foo"] == 1
    assert not nc.supports_check  # CHECK exists from 0.4.0


@pytest.mark.parametrize(
    ("name", "doc", "fragment"),
    [
        ("a.conflist", b"{not json", "invalid JSON"),
        ("a.conflist", b"[]", "not a JSON object"),
        ("a.conflist", _b({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "missing network name"),
        ("a.conflist", _b({"name": "n", "cniVersion": "1.0.0", "plugins": []}), "no plugins"),
        ("a.conflist", _b({"name": "n", "cniVersion": "1.0.0", "plugins": [{"x": 1}]}), "has no 'type'"),
        ("a.conflist", _b({"name": "n", "cniVersion": "9.9.9", "plugins": [{"type": "x"}]}), "unsupported cniVersion"),
        ("a.conflist", _b({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "../x"}]}), "invalid type"),
        ("a.conflist", _b({"name": "bad name", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "invalid network"),
        ("a.conf", _b({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "configuration list"),
        ("a.json", _b({"name": "n", "cniVersion": "1.0.0"}), "has no 'type'"),
    ],
)
def test_invalid_configs_are_invalid_arguments_naming_the_file(name: str, doc: bytes, fragment: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=fragment) as ei:
        config.parse_file(name, doc)
    assert name in str(ei.value)


def test_disable_check_accepts_bool_and_string() -> None:
    for v in (True, "true", "TRUE"):
        doc = {**BRIDGE_LIST, "disableCheck": v}
        assert not config.parse_conflist(_b(doc)).supports_check
    assert config.parse_conflist(_b({**BRIDGE_LIST, "disableCheck": "false"})).supports_check


def test_conf_files_lexical_order_and_extensions() -> None:
    names = ["99-last.conf", "10-b.conflist", "10-a.json", "README", "05-x.yaml", ".10-hidden.conf", "20-c.conflist"]
    assert config.conf_files(names) == ["10-a.json", "10-b.conflist", "20-c.conflist", "99-last.conf"]
    assert config.limit_conf_files(names, 1) == ["10-a.json"]
    assert config.limit_conf_files(names, 2) == ["10-a.json", "10-b.conflist"]
    assert len(config.limit_conf_files(names, 0)) == 4  # 0: no limit


def test_networks_get_loopback_first_then_eth_n() -> None:
    a = config.parse_conflist(_b(BRIDGE_LIST))
    b = config.parse_conflist(_b({**BRIDGE_LIST, "name": "second"}))
    nets = config.networks_from([a, b])
    assert [(n.name, n.ifname) for n in nets] == [("cni-loopback", "lo"), ("pods", "eth0"), ("second", "eth1")]
    assert [p.type for p in nets[0].config.plugins] == ["loopback"]
    with pytest.raises(errdefs.InvalidArgument, match="same name"):
        config.networks_from([a, a])


# --- results -------------------------------------------------------------------------------------

R100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
        {"name": "veth1", "mac": "aa:bb:cc:00:00:02"},
        {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/var/run/netns/cni-1"},
    ],
    "ips": [
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
        {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0", "mtu": 1400}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.local"]},
}


def _r040(version: str) -> dict[str, object]:
    out = json.loads(json.dumps(R100))
    out["cniVersion"] = version
    for ip in out["ips"]:
        ip["version"] = "6" if ":" in ip["address"] else "4"
    return out


@pytest.mark.parametrize("doc", [R100, _r040("0.4.0"), _r040("0.3.1"), _r040("0.3.0")])
def test_results_of_current_versions(doc: dict[str, object]) -> None:
    res = result.parse_result(_b(doc), "1.0.0")
    assert res.cni_version == doc["cniVersion"]
    assert [i.name for i in res.interfaces] == ["cni0", "veth1", "eth0"]
    assert res.interfaces[2].sandbox == "/var/run/netns/cni-1"
    assert [str(ip.address) for ip in res.ips] == ["fd00::5/64", "10.88.0.5/16"]
    assert res.ips[1].gateway == ipaddress.ip_address("10.88.0.1")
    assert res.interface_of(res.ips[1]) == res.interfaces[2]
    assert [str(r.dst) for r in res.routes] == ["0.0.0.0/0", "::/0"]
    assert res.routes[1].extra == {"mtu": 1400}
    assert res.dns.nameservers == ("10.96.0.10",) and res.dns.search == ("svc.local",)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_results_of_legacy_versions(version: str) -> None:
    doc = {
        "cniVersion": version,
        "ip4": {"ip": "10.1.0.7/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd01::7/64"},
        "dns": {"nameservers": ["1.1.1.1"]},
    }
    res = result.parse_result(_b(doc), "0.2.0")
    assert [str(ip.address) for ip in res.ips] == ["10.1.0.7/24", "fd01::7/64"]
    assert all(ip.interface is None for ip in res.ips)
    assert result.all_ips([("eth0", res)]) == [("eth0", res.ips[0]), ("eth0", res.ips[1])]
    # written back in a current version, and the other way round
    cur = res.to_json("1.0.0")
    assert cur["ips"] == [
        {"address": "10.1.0.7/24", "gateway": "10.1.0.1"},
        {"address": "fd01::7/64"},
    ]
    assert res.to_json(version)["ip4"] == {"ip": "10.1.0.7/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]}


def test_result_round_trips_and_converts_between_versions() -> None:
    res = result.parse_result(_b(R100), "1.0.0")
    assert result.parse_result(res.to_json(), "1.0.0") == res
    as040 = res.to_json("0.4.0")
    assert as040["cniVersion"] == "0.4.0"
    assert [ip["version"] for ip in as040["ips"]] == ["6", "4"]
    assert "version" not in res.to_json("1.0.0")["ips"][0]
    assert res.to_json("0.4.0")["routes"][1] == {"dst": "::/0", "mtu": 1400}


def test_result_without_version_takes_the_config_version() -> None:
    res = result.parse_result(_b({"ips": [{"version": "4", "address": "10.0.0.2/8"}]}), "0.3.1")
    assert res.cni_version == "0.3.1"


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[1]",
        _b({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/8"}]}),
        _b({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]}),  # no prefix
        _b({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "interface": 4}]}),
        _b({"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.3/8"}]}),
        _b({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}),
        _b({"cniVersion": "x", "ips": []}),
    ],
)
def test_bad_results_are_errors_naming_the_plugin(doc: bytes) -> None:
    with pytest.raises(errdefs.Unknown, match='plugin "bridge"'):
        result.parse_result(doc, "1.0.0", what='plugin "bridge"')


def test_plugin_error_json() -> None:
    info = result.parse_error(_b({"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "no subnet"}))
    assert info is not None
    assert info.describe() == "bad config; no subnet [code 7 (invalid network config)]"
    assert result.parse_error(b"panic: oops") is None
    assert result.parse_error(_b({"cniVersion": "1.0.0"})) is None


# --- plugin inputs ---------------------------------------------------------------------------------


def test_k8s_cni_args_in_containerd_order() -> None:
    args = invoke.k8s_args(namespace="default", name="web", sandbox_id="abc", uid="u-1")
    assert invoke.format_args(args) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
    )
    with pytest.raises(errdefs.InvalidArgument):
        invoke.format_args([("K8S_POD_NAME", "a;b")])
    with pytest.raises(errdefs.InvalidArgument):
        invoke.format_args([("A=B", "c")])


def test_env_sets_cni_variables_over_the_base() -> None:
    inv = invoke.Invocation(
        command="ADD",
        container_id="abc",
        netns="/var/run/netns/cni-1",
        ifname="eth0",
        args=(("IgnoreUnknown", "1"),),
        path=("/usr/lib/cni", "/opt/cni/bin"),
    )
    env = invoke.build_env(inv, {"PATH": "/usr/bin", "CNI_IFNAME": "stale", "CNI_OTHER": "x"})
    assert env == {
        "PATH": "/usr/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/var/run/netns/cni-1",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1",
        "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
    }


def test_stdin_has_name_version_prev_result_and_declared_capabilities_only() -> None:
    nc = config.parse_conflist(_b(BRIDGE_LIST))
    caps = invoke.CapabilityArgs(
        port_mappings=(
            invoke.PortMapping(8080, 80, "TCP", "127.0.0.1"),
            invoke.PortMapping(0, 53, "udp"),  # no host port: not passed (containerd)
        ),
        bandwidth=invoke.Bandwidth(ingress_rate=1000, egress_rate=2000),
        dns=invoke.DNSConfig(servers=("10.0.0.10",)),
        ip_ranges=((invoke.IPRange("10.1.0.0/24", gateway="10.1.0.1"),),),
    ).to_json()
    assert caps["ipRanges"] == [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}]]

    bridge = json.loads(invoke.plugin_stdin(nc, nc.plugins[0], capability_args=caps))
    assert bridge["name"] == "pods" and bridge["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge
    assert bridge["ipam"]["subnet"] == "10.88.0.0/16"

    prev = result.parse_result(_b(R100), "1.0.0")
    portmap = json.loads(invoke.plugin_stdin(nc, nc.plugins[1], prev_result=prev, capability_args=caps))
    assert portmap["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    }
    assert portmap["prevResult"] == prev.to_json("1.0.0")

    bw = json.loads(invoke.plugin_stdin(nc, nc.plugins[2], capability_args=caps))
    assert bw["runtimeConfig"] == {
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 0, "egressRate": 2000, "egressBurst": 0}
    }


def test_prev_result_is_sent_in_the_list_version() -> None:
    nc = config.parse_conflist(_b({**BRIDGE_LIST, "cniVersion": "0.4.0"}))
    prev = result.parse_result(_b(R100), "1.0.0")
    sent = json.loads(invoke.plugin_stdin(nc, nc.plugins[1], prev_result=prev))
    assert sent["prevResult"]["cniVersion"] == "0.4.0"
    want = {"version": "4", "address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2}
    assert sent["prevResult"]["ips"][1] == want


# --- pod IP choice -------------------------------------------------------------------------------


def _ips(*addrs: str) -> list[result.IPConfig]:
    return [result.IPConfig(ipaddress.ip_interface(a)) for a in addrs]


def test_pod_ip_is_the_first_ipv4_unless_preferred_otherwise() -> None:
    ips = _ips("fd00::5/64", "10.0.0.5/8", "10.0.0.6/8")
    assert select_pod_ips(ips) == ("10.0.0.5", ("fd00::5", "10.0.0.6"))
    assert select_pod_ips(ips, "ipv4") == ("10.0.0.5", ("fd00::5", "10.0.0.6"))
    assert select_pod_ips(ips, "ipv6") == ("fd00::5", ("10.0.0.5", "10.0.0.6"))
    assert select_pod_ips(ips, "cni") == ("fd00::5", ("10.0.0.5", "10.0.0.6"))
    assert select_pod_ips(_ips("fd00::5/64")) == ("fd00::5", ())
    with pytest.raises(errdefs.FailedPrecondition):
        select_pod_ips([])
