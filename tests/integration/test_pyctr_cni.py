"""``pyctr run --cni [-p ...]`` with the REAL CNI plugins (Debian containernetworking-plugins).

The test writes its own conflist: a bridge ``pycd-run-<rand>`` with host-local IPAM on a free
``10.88.<n>.0/24`` (store in the test's dir) and portmap (snat).  busybox httpd in a
container serves a page the host fetches through ``127.0.0.1:<port>``; deleting the task
(``tasks kill`` + ``tasks delete``, or ``stop`` + ``containers rm``) must release the address
and drop portmap's rules; ``run --rm --cni ... ip addr`` shows eth0 with an address and
cleans up after itself.  The module fixture puts the host back (bridge, nat chains,
ip_forward, temp dir) even when a test fails, as tests/integration/test_cri_cni.py does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.procs import free_port, remove_tree, wait_for

from .daemon import BIN, CTR, Daemon
from .test_cri_cni import CNI_BIN, HOSTPORT_CHAINS, _chains_of, _drop_chain, _free_subnet, _nat_chains, _nat_rules, _run

pytestmark = pytest.mark.root

PYCTR = str(BIN / "pyctr")
IMAGE = "docker.io/library/pycd-www:latest"
PAGE = "hello from pyctr run --cni\n"


@dataclass
class Net:
    root: Path
    bridge: str
    network: str
    subnet: ipaddress.IPv4Network
    conf_dir: Path
    ipam_dir: Path

    def reserved(self) -> list[str]:
        d = self.ipam_dir / self.network
        if not d.exists():
            return []
        return sorted(n for n in os.listdir(d) if n[0].isdigit() and not n.startswith("last_reserved_ip"))


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    for tool in ("iptables", "ip"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not os.path.exists(f"{CNI_BIN}/bridge") or not os.path.exists(f"{CNI_BIN}/portmap"):
        pytest.skip("containernetworking-plugins is not installed")
    tag = f"{random.getrandbits(24):06x}"
    root = Path(f"/tmp/pycd-ctrcni-{tag}")
    root.mkdir(mode=0o700)
    n = Net(root=root, bridge=f"pycd-run-{tag}", network=f"pycd-run-{tag}", subnet=_free_subnet(),
            conf_dir=root / "net.d", ipam_dir=root / "ipam")
    n.conf_dir.mkdir()
    conflist = {
        "cniVersion": "1.0.0",
        "name": n.network,
        "plugins": [
            {"type": "bridge", "bridge": n.bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": str(n.subnet)}]], "dataDir": str(n.ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    (n.conf_dir / f"10-{n.network}.conflist").write_text(json.dumps(conflist))
    chains_before = _nat_chains()
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        yield n
    finally:
        _run("ip", "link", "del", n.bridge, check=False)
        for chain in _chains_of(n.network):
            _drop_chain(chain)
        for chain in HOSTPORT_CHAINS:
            if chain not in chains_before and not any(
                line.startswith(f"-A {chain} ") for line in _nat_rules() if chain == "CNI-HOSTPORT-DNAT"
            ):
                _drop_chain(chain)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward_before)
        remove_tree(root)


@pytest.fixture(scope="module")
def www_archive(fixture_dir: Path) -> Path:
    img = images.build_busybox_image(fixture_dir / "www", name=IMAGE,
                                     extra_layers=[[images.d("www"), images.f("www/index.html", PAGE)]])
    return images.export_archive(img, fixture_dir / "www.tar")


@dataclass
class Ctl:
    daemon: Daemon
    net: Net

    def pyctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PYCTR, "-a", self.daemon.address, "-n", "default", *args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"pyctr {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def cni_flags(self) -> list[str]:
        return ["--cni", "--cni-conf-dir", str(self.net.conf_dir), "--cni-bin-dir", CNI_BIN]

    def tasks(self) -> dict[str, str]:
        rows = self.pyctr("tasks", "ls").stdout.splitlines()[1:]
        return {r.split()[0]: r.split()[2] for r in rows if r.strip()}

    def containers(self) -> list[str]:
        return self.pyctr("containers", "ls", "-q").stdout.split()


@pytest.fixture
def ctl(shared_daemon: Daemon, net: Net, www_archive: Path) -> Ctl:
    subprocess.run([CTR, "-a", shared_daemon.address, "-n", "default", "images", "import", str(www_archive)],
                   check=True, capture_output=True, timeout=120)
    return Ctl(shared_daemon, net)


@pytest.fixture
def cid(ctl: Ctl) -> Iterator[str]:
    name = f"cni-{secrets.token_hex(4)}"
    yield name
    if name in ctl.tasks():  # a failed test: kill, then delete (which runs CNI DEL) by our own commands
        ctl.pyctr("tasks", "kill", "-s", "SIGKILL", "-a", name, check=False)
        wait_for(lambda: ctl.tasks().get(name) in (None, "STOPPED"), 20, f"{name} to stop")
        ctl.pyctr("tasks", "rm", "-f", name, check=False)
    if name in ctl.containers():
        ctl.pyctr("containers", "rm", "-f", name, check=False)


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


@pytest.mark.parametrize("release", ["tasks-delete", "stop-containers-rm"])
def test_published_port_reaches_httpd_and_deleting_the_task_releases_the_network(
        ctl: Ctl, cid: str, release: str) -> None:
    net = ctl.net
    port = free_port()
    ctl.pyctr("run", "-d", *ctl.cni_flags(), "-p", f"127.0.0.1:{port}:80", IMAGE, cid,
              "httpd", "-f", "-p", "80", "-h", "/www")
    assert ctl.tasks().get(cid) == "RUNNING"
    ips = net.reserved()
    assert len(ips) == 1 and ipaddress.ip_address(ips[0]) in net.subnet
    assert _chains_of(net.network)  # portmap's DNAT chain for the container
    label = json.loads(ctl.pyctr("containers", "info", cid).stdout)["Labels"]["io.pycontainerd.cni"]
    assert json.loads(label)["ports"] == [{"hostPort": port, "containerPort": 80, "protocol": "tcp",
                                           "hostIP": "127.0.0.1"}]

    url = f"http://127.0.0.1:{port}/index.html"
    assert wait_for(lambda: _fetch(url), 20, f"{url} from the host") == PAGE

    if release == "tasks-delete":
        ctl.pyctr("tasks", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: ctl.tasks().get(cid) == "STOPPED", 20, f"{cid} to stop")
        ctl.pyctr("tasks", "delete", cid)
        assert net.reserved() == [] and _chains_of(net.network) == []
        ctl.pyctr("containers", "rm", cid)  # DEL again: nothing left, no error
    else:
        ctl.pyctr("stop", "-t", "1", cid)
        ctl.pyctr("containers", "rm", cid)
    assert net.reserved() == []
    assert _chains_of(net.network) == []
    assert _fetch(url) is None
    assert cid not in ctl.containers()


def test_run_rm_cni_shows_eth0_with_an_address_and_cleans_up(ctl: Ctl, cid: str) -> None:
    net = ctl.net
    r = ctl.pyctr("run", "--rm", *ctl.cni_flags(), IMAGE, cid, "ip", "-4", "addr")
    addrs = [line.split()[1].split("/")[0] for line in r.stdout.splitlines() if line.strip().startswith("inet ")]
    assert "eth0" in r.stdout, r.stdout
    assert "127.0.0.1" in addrs  # the loopback network
    assert any(ipaddress.ip_address(a) in net.subnet for a in addrs), r.stdout
    assert net.reserved() == []
    assert cid not in ctl.containers() and cid not in ctl.tasks()
    assert not list((Path(ctl.daemon.address).parent / "cni" / "results").glob(f"*default-{cid}*"))


def test_publish_without_cni_and_a_missing_config_are_refused_before_anything_is_made(ctl: Ctl, cid: str) -> None:
    r = ctl.pyctr("run", "--rm", "-p", "8080:80", IMAGE, cid, "true", check=False)
    assert r.returncode != 0 and "--cni" in r.stderr
    r = ctl.pyctr("run", "--rm", "--cni", "--cni-conf-dir", str(ctl.net.root / "nothing"), IMAGE, cid, "true",
                  check=False)
    assert r.returncode != 0 and "no network config" in r.stderr, r.stderr
    r = ctl.pyctr("run", "--rm", *ctl.cni_flags(), "-p", "80", IMAGE, cid, "true", check=False)
    assert r.returncode != 0 and "HOST_PORT:CONTAINER_PORT" in r.stderr, r.stderr
    assert cid not in ctl.containers()
