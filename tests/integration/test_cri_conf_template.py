"""CRI ``cni.conf_template`` with the REAL CNI plugins: before the kubelet sends a pod CIDR the
network is not ready (no config); ``UpdateRuntimeConfig``'s CIDR renders the template into
``conf_dir``; the network is then ready and a pod gets an address of that CIDR from the real
ptp + host-local plugins.  Everything is torn down: the pod's netns, its veth (the DEL), the
host-local store (in the test's dir) and ``net.ipv4.ip_forward`` (ptp turns it on)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import shutil
from pathlib import Path

import pytest

from pycontainerd import netns
from pycontainerd.cni import CNI, PodNetwork
from pycontainerd.config import parse_config
from pycontainerd.cri.runtime import RuntimeState

pytestmark = pytest.mark.root

CNI_BIN = "/usr/lib/cni"
TEMPLATE = """\
{
  "name": "pycd-tpl-net",
  "cniVersion": "0.4.0",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "DATADIR",
        "ranges": [{{range $i, $range := .PodCIDRRanges}}{{if $i}}, {{end}}[{"subnet": "{{$range}}"}]{{end}}],
        "routes": [{{range $i, $route := .Routes}}{{if $i}}, {{end}}{"dst": "{{$route}}"}{{end}}]
      }
    }
  ]
}
"""


def test_pod_cidr_renders_the_template_and_pods_get_addresses_from_it(tmp_path: Path) -> None:
    if not (Path(CNI_BIN) / "ptp").exists():
        pytest.skip("containernetworking-plugins (ptp) not installed")
    subnet = ipaddress.ip_network(f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24")
    conf_dir, tpl = tmp_path / "net.d", tmp_path / "template.json"
    tpl.write_text(TEMPLATE.replace("DATADIR", str(tmp_path / "ipam")))
    cfg = parse_config(f'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\nconf_dir = "{conf_dir}"\n'
                       f'conf_template = "{tpl}"\nbin_dir = "{CNI_BIN}"\n')
    cni = CNI(conf_dir=conf_dir, bin_dirs=cfg.cri.cni.bin_search_path, cache_dir=tmp_path / "cache")
    state = RuntimeState(cfg.cri, cni)
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    ns_path = ""
    pod = None

    async def run() -> None:
        nonlocal ns_path, pod
        ready, _, message = await state.network_ready()
        assert not ready and "no network config" in message
        await state.render_cni_conf(str(subnet))
        assert (conf_dir / "10-containerd-net.conflist").exists()
        assert (await state.network_ready())[0]
        ns_path = await netns.create(tmp_path / "netns")
        pod = PodNetwork(sandbox_id="tpl" + "c" * 61, netns=ns_path, namespace="default", name="p", uid="u")
        result = await cni.setup(pod)
        assert ipaddress.ip_address(result.pod_ip) in subnet

    async def cleanup() -> None:
        if pod is not None:
            await cni.teardown(pod)
        if ns_path:
            await netns.remove(ns_path)

    try:
        asyncio.run(run())
    finally:
        try:
            asyncio.run(cleanup())
        finally:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
            shutil.rmtree(tmp_path / "ipam", ignore_errors=True)
