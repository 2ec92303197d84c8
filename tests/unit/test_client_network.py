"""``pyctr run --cni``'s flag parsing and the label that lets a later invocation run CNI DEL."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd import errdefs
from pycontainerd.client.network import CNI_LABEL, ContainerNetwork, parse_publish, teardown_network
from pycontainerd.cni import PortMapping


@pytest.mark.parametrize(("value", "want"), [
    ("8080:80", PortMapping(8080, 80, "tcp", "")),
    ("127.0.0.1:8080:80", PortMapping(8080, 80, "tcp", "127.0.0.1")),
    ("5353:53/udp", PortMapping(5353, 53, "udp", "")),
    ("0.0.0.0:1:65535/TCP", PortMapping(1, 65535, "tcp", "0.0.0.0")),
    ("[::1]:8080:80", PortMapping(8080, 80, "tcp", "::1")),
])
def test_publish_forms(value: str, want: PortMapping) -> None:
    assert parse_publish(value) == want


@pytest.mark.parametrize("value", ["80", "a:80", "8080:0", "8080:70000", "8080:80/icmp", "nohost:8080:80",
                                   "1:2:3:4", "[::1:8080:80"])
def test_bad_publish_is_invalid_argument(value: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        parse_publish(value)


def test_label_round_trip() -> None:
    net = ContainerNetwork(conf_dir="/etc/cni/net.d", bin_dirs=("/a", "/b"), cache_dir="/run/x/cni",
                           ports=(PortMapping(8080, 80, "udp", "127.0.0.1"), PortMapping(1, 2)))
    assert ContainerNetwork.from_label(net.label()) == net
    assert net.pod("default", "web", "").sandbox_id == "default-web"
    with pytest.raises(errdefs.InvalidArgument):
        ContainerNetwork.from_label('{"confDir": "/x"}')


def test_teardown_without_the_label_does_nothing() -> None:
    assert asyncio.run(teardown_network("default", "web", {})) is False
    assert asyncio.run(teardown_network("default", "web", {CNI_LABEL: ""})) is False
