"""CNI: pod networking through Container Network Interface plugins (containerd's go-cni).

``config`` parses network configuration lists, ``result`` the plugins' results and errors
(every cniVersion from 0.1.0 to 1.1.0), ``invoke`` builds a plugin's environment and stdin
and runs it, ``network`` is the :class:`CNI` manager the CRI plugin calls (setup, check,
teardown, status) with its result cache.  No gRPC here: the CRI plugin translates.
"""

from __future__ import annotations

from .config import LOOPBACK, Network, NetworkConfigList, PluginConfig, parse_conf, parse_conflist
from .invoke import Bandwidth, CapabilityArgs, DNSConfig, IPRange, PluginError, PluginNotFound, PortMapping
from .network import CNI, Attachment, PodNetwork, SetupResult, select_pod_ips
from .result import DNS, Interface, IPConfig, Result, Route, parse_error, parse_result

__all__ = [
    "CNI",
    "DNS",
    "LOOPBACK",
    "Attachment",
    "Bandwidth",
    "CapabilityArgs",
    "DNSConfig",
    "IPConfig",
    "IPRange",
    "Interface",
    "Network",
    "NetworkConfigList",
    "PluginConfig",
    "PluginError",
    "PluginNotFound",
    "PodNetwork",
    "PortMapping",
    "Result",
    "Route",
    "SetupResult",
    "parse_conf",
    "parse_conflist",
    "parse_error",
    "parse_result",
    "select_pod_ips",
]
