"""CNI: pod networking through Container Network Interface plugins (containerd's go-cni).

``config`` parses network configuration lists, ``result`` the plugins' results and errors
(every cniVersion from 0.1.0 to 1.1.0), ``invoke`` builds a plugin's environment and stdin
and runs it, ``network`` is the :class:`CNI` manager the CRI plugin calls (setup, check,
teardown, status) with its result cache.  No gRPC here: the CRI plugin translates.

How the CRI plugin uses it with :mod:`pycontainerd.netns`::

    net = CNI(conf_dir=cri.cni.conf_dir, bin_dirs=cri.cni.bin_search_path,
              cache_dir=cri_state / "cni", max_conf_num=cri.cni.max_conf_num, ip_pref=cri.cni.ip_pref)
    await net.status()                                   # Status: NetworkReady (raises FailedPrecondition)
    path = await netns.create(netns.netns_dir(cri_state, under_state_dir=cri.netns_mounts_under_state_dir))
    pod = PodNetwork(sandbox_id=sid, netns=path, namespace=meta.namespace, name=meta.name, uid=meta.uid,
                     capabilities=CapabilityArgs(port_mappings=(PortMapping(8080, 80, "tcp", "127.0.0.1"),)))
    res = await net.setup(pod)                           # res.pod_ip, res.additional_ips, res.ips
    ...
    await net.teardown(pod)                              # StopPodSandbox (idempotent; also after a restart)
    await netns.remove(path)
"""

from __future__ import annotations

from .config import LOOPBACK, Network, NetworkConfigList, PluginConfig, parse_conf, parse_conflist
from .invoke import Bandwidth, CapabilityArgs, DNSConfig, IPRange, PluginError, PluginNotFound, PortMapping
from .network import CNI, Attachment, PodNetwork, PodNetworking, SetupResult, select_pod_ips
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
    "PodNetworking",
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
