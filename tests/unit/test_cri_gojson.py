"""cri/gojson.py: values shaped as containerd 1.6's Go encoding/json writes them in a verbose info."""

from __future__ import annotations

import ipaddress

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from pycontainerd.cni.result import DNS, Interface, IPConfig, Result, Route
from pycontainerd.cri import gojson
from pycontainerd.cri.handlers import RUNC_OPTIONS_TYPE, RUNTIME_OPTIONS_TYPE
from pycontainerd.metadata.containers import TypedValue


def test_message_has_proto_names_numbers_and_omits_zero_values() -> None:
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="box"), log_path="box.log", args=["a"], labels={"k": "v"},
        envs=[pb.KeyValue(key="A", value="1")],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=1 << 40),
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=0), namespace_options=pb.NamespaceOption(pid=pb.CONTAINER))))
    cfg.linux.security_context.seccomp.SetInParent()  # set, all zero: {}
    assert gojson.message(cfg) == {
        "metadata": {"name": "box"}, "args": ["a"], "envs": [{"key": "A", "value": "1"}], "labels": {"k": "v"},
        "log_path": "box.log",
        "linux": {"resources": {"memory_limit_in_bytes": 1 << 40},
                  "security_context": {"namespace_options": {"pid": 1}, "run_as_user": {}, "seccomp": {}}}}
    assert gojson.message(pb.ContainerConfig()) == {}


def test_bytes_are_base64() -> None:
    assert gojson.message(pb.ExecSyncResponse(stdout=b"hi", exit_code=3)) == {"stdout": "aGk=", "exit_code": 3}


def test_runtime_options() -> None:
    assert gojson.runtime_options(None) is None
    runc = TypedValue(RUNC_OPTIONS_TYPE, oci_pb2.Options(systemd_cgroup=True, binary_name="runc").SerializeToString())
    assert gojson.runtime_options(runc) == {"binary_name": "runc", "systemd_cgroup": True}
    raw = bytes([1 << 3 | 2, 3]) + b"abc" + bytes([2 << 3 | 2, 2]) + b"/x"
    assert gojson.runtime_options(TypedValue(RUNTIME_OPTIONS_TYPE, raw)) == {"type_url": "abc", "config_path": "/x"}
    assert gojson.runtime_options(TypedValue(RUNTIME_OPTIONS_TYPE, b"\x08\x01")) is None  # not strings
    assert gojson.runtime_options(TypedValue("other.Type", b"")) is None


def test_cni_result_as_go_cni() -> None:
    res = Result(cni_version="0.4.0",
                 interfaces=(Interface("cni0", mac="aa"), Interface("eth0", mac="bb", sandbox="/ns")),
                 ips=(IPConfig(ipaddress.ip_interface("10.1.0.2/24"), ipaddress.ip_address("10.1.0.1"), 1),
                      IPConfig(ipaddress.ip_interface("10.1.0.3/24"), None, None)),  # no interface: left out
                 routes=(Route(ipaddress.ip_network("0.0.0.0/0")),
                         Route(ipaddress.ip_network("10.2.0.0/16"), ipaddress.ip_address("10.1.0.1"))),
                 dns=DNS(nameservers=("1.1.1.1",)))
    lo = Result(cni_version="0.4.0", interfaces=(Interface("lo", mac="00", sandbox="/ns"),),
                ips=(IPConfig(ipaddress.ip_interface("127.0.0.1/8"), None, 0),))
    assert gojson.cni_result([("lo", lo), ("eth0", res)]) == {
        "Interfaces": {
            "lo": {"IPConfigs": [{"IP": "127.0.0.1", "Gateway": ""}], "Mac": "00", "Sandbox": "/ns"},
            "cni0": {"IPConfigs": None, "Mac": "aa", "Sandbox": ""},
            "eth0": {"IPConfigs": [{"IP": "10.1.0.2", "Gateway": "10.1.0.1"}], "Mac": "bb", "Sandbox": "/ns"}},
        "DNS": [{}, {"nameservers": ["1.1.1.1"]}],
        "Routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.2.0.0/16", "gw": "10.1.0.1"}]}
