"""Pod networking with the REAL CNI plugins (Debian containernetworking-plugins in /usr/lib/cni).

A test network: a bridge ``pycd-cni-<rand>`` with host-local IPAM on ``10.88.<n>.0/24``
(its store in the test's own dataDir) and portmap, in a conflist the test writes.  Pods are
network namespaces made by ``pycontainerd.netns``; the CRI plugin will call the same
``pycontainerd.cni.CNI``.  Nothing leaves 127.0.0.0/8 except inside the test's bridge and
namespaces.

What the host keeps after the plugins ran, and how the fixture puts it back:
- the bridge (the bridge plugin never deletes it): deleted, with the ``route_localnet=1``
  portmap sets on it (needed to DNAT 127.0.0.1 to a pod: portmap's localhost SNAT rule
  marks the connection and the kernel must route a 127/8 source out of the bridge);
- ``net.ipv4.ip_forward`` (bridge with ``isGateway`` turns it on): restored;
- portmap's shared nat chains ``CNI-HOSTPORT-{DNAT,SETMARK,MASQ}`` and their jumps, which it
  never deletes: removed if they were not there before and hold nothing but ours; its
  per-pod ``CNI-DN-*`` chains: removed if a DEL did not;
- pinned namespaces, the host-local store and the temp dir: removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycontainerd import errdefs, netns
from pycontainerd.cni import CNI, CapabilityArgs, PluginError, PodNetwork, PortMapping
from tests.fixtures.procs import free_port, mounts_under, remove_tree, unmount_all, wait_for

pytestmark = pytest.mark.root

CNI_BIN = "/usr/lib/cni"
BUSYBOX = "/bin/busybox"
HOSTPORT_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ")


def _run(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _nat_rules() -> list[str]:
    return _run("iptables", "-w", "-t", "nat", "-S").splitlines()


def _nat_chains() -> set[str]:
    return {line.split()[1] for line in _nat_rules() if line.startswith("-N ")}


def _drop_chain(chain: str) -> None:
    for line in _nat_rules():  # jumps to it first
        parts = shlex.split(line)
        if parts[0] == "-A" and "-j" in parts and parts[parts.index("-j") + 1] == chain:
            _run("iptables", "-w", "-t", "nat", "-D", *parts[1:], check=False)
    _run("iptables", "-w", "-t", "nat", "-F", chain, check=False)
    _run("iptables", "-w", "-t", "nat", "-X", chain, check=False)


def _chains_of(network: str) -> list[str]:
    """portmap's per-pod chains for ``network`` (their rules carry its name in a comment)."""
    out: set[str] = set()
    for line in _nat_rules():
        parts = shlex.split(line)
        if not any(p.startswith(f'dnat name: "{network}"') for p in parts):
            continue
        targets = [parts[1], parts[parts.index("-j") + 1] if "-j" in parts else ""]
        out.update(t for t in targets if t.startswith("CNI-DN-"))
    return sorted(out)


# busybox-static's wget crashes here (SIGSEGV); the interpreter fetches instead
FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=2).read().decode())"


def _in_ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={ns}", *argv], capture_output=True, text=True, check=False, timeout=30)


def _ns_addrs(ns: str, ifname: str) -> list[str]:
    p = _in_ns(ns, "ip", "-4", "-j", "addr", "show", "dev", ifname)
    if p.returncode != 0:
        return []
    return [a["local"] for link in json.loads(p.stdout) for a in link.get("addr_info", [])]


@dataclass
class Lab:
    root: Path
    bridge: str
    network: str
    subnet: ipaddress.IPv4Network
    conf_dir: Path
    ns_dir: Path
    state: Path
    ipam_dir: Path

    def conflist(self, conf_dir: Path, *, name: str | None = None, extra: Sequence[dict[str, object]] = ()) -> str:
        name = name or self.network
        doc = {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet)}]],
                        "dataDir": str(self.ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                *extra,
            ],
        }
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / f"10-{name}.conflist").write_text(json.dumps(doc))
        return name

    def cni(self, conf_dir: Path | None = None, bin_dirs: tuple[str, ...] = (CNI_BIN,)) -> CNI:
        return CNI(conf_dir=conf_dir or self.conf_dir, bin_dirs=bin_dirs, cache_dir=self.state, plugin_timeout=60)

    def reserved(self, network: str | None = None) -> list[str]:
        """The IPs host-local holds for ``network``."""
        d = self.ipam_dir / (network or self.network)
        if not d.exists():
            return []
        return sorted(n for n in os.listdir(d) if n[0].isdigit() and not n.startswith("last_reserved_ip"))


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_network(line.split()[0], strict=False) for line in _run("ip", "-4", "route").splitlines()
            if line and line.split()[0][0].isdigit()]
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.88.{random.randint(1, 254)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise AssertionError("no free 10.88.x.0/24 subnet")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for tool in ("iptables", "nsenter", "ip"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not os.path.exists(f"{CNI_BIN}/bridge") or not os.access(BUSYBOX, os.X_OK):
        pytest.skip("containernetworking-plugins or busybox-static is not installed")
    tag = f"{random.getrandbits(24):06x}"
    root = Path(f"/tmp/pycd-cricni-{tag}")
    root.mkdir(mode=0o700)
    lab = Lab(
        root=root,
        bridge=f"pycd-cni-{tag}",
        network=f"pycd-cni-{tag}",
        subnet=_free_subnet(),
        conf_dir=root / "net.d",
        ns_dir=root / "netns",
        state=root / "state",
        ipam_dir=root / "ipam",
    )
    lab.conflist(lab.conf_dir)
    chains_before = _nat_chains()
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        yield lab
    finally:
        for name in os.listdir(lab.ns_dir) if lab.ns_dir.exists() else []:
            with contextlib.suppress(Exception):
                asyncio.run(netns.remove(lab.ns_dir / name))
        unmount_all(str(root))
        _run("ip", "link", "del", lab.bridge, check=False)
        for network in {lab.network, *(p.name.split("-", 1)[1].rsplit(".", 1)[0] for p in root.glob("*/10-*"))}:
            for chain in _chains_of(network):
                _drop_chain(chain)
        for chain in HOSTPORT_CHAINS:
            if chain not in chains_before and not any(
                line.startswith(f"-A {chain} ") for line in _nat_rules() if chain == "CNI-HOSTPORT-DNAT"
            ):
                _drop_chain(chain)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward_before)
        remove_tree(root)


async def _pods(lab: Lab, n: int) -> list[str]:
    return [await netns.create(lab.ns_dir) for _ in range(n)]


def test_two_pods_ping_each_other_and_a_host_port_reaches_httpd(lab: Lab) -> None:
    ns1, ns2 = asyncio.run(_pods(lab, 2))
    assert asyncio.run(netns.exists(ns1)) and asyncio.run(netns.exists(ns2))
    host_port = free_port()
    pod1 = PodNetwork(
        sandbox_id="pod1" + "a" * 60,
        netns=ns1,
        namespace="default",
        name="web",
        uid="uid-1",
        capabilities=CapabilityArgs(port_mappings=(PortMapping(host_port, 8080, "tcp", "127.0.0.1"),)),
    )
    pod2 = PodNetwork(sandbox_id="pod2" + "b" * 60, netns=ns2, namespace="default", name="client", uid="uid-2")
    cni = lab.cni()
    asyncio.run(cni.status())
    httpd: subprocess.Popen[bytes] | None = None
    try:
        r1 = asyncio.run(cni.setup(pod1))
        r2 = asyncio.run(cni.setup(pod2))
        ip1, ip2 = ipaddress.ip_address(r1.pod_ip), ipaddress.ip_address(r2.pod_ip)
        assert ip1 in lab.subnet and ip2 in lab.subnet and ip1 != ip2
        assert r1.additional_ips == ()
        assert _ns_addrs(ns1, "eth0") == [r1.pod_ip] and _ns_addrs(ns2, "eth0") == [r2.pod_ip]
        assert _ns_addrs(ns1, "lo") == ["127.0.0.1"]  # the loopback network brought it up
        assert lab.reserved() == sorted([r1.pod_ip, r2.pod_ip])

        # pod to pod over the bridge
        wait_for(
            lambda: _in_ns(ns2, BUSYBOX, "ping", "-c", "1", "-W", "1", r1.pod_ip).returncode == 0,
            15,
            f"ping {r1.pod_ip} from pod2",
        )
        assert _in_ns(ns1, BUSYBOX, "ping", "-c", "1", "-W", "2", r2.pod_ip).returncode == 0

        # busybox httpd in pod1, reached from pod2 directly and from the host through 127.0.0.1:host_port
        www = lab.root / "www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text("hello from pod1\n")
        httpd = subprocess.Popen(
            ["nsenter", f"--net={ns1}", BUSYBOX, "httpd", "-f", "-p", "8080", "-h", str(www)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{r1.pod_ip}:8080/index.html"
        wait_for(
            lambda: "hello from pod1" in _in_ns(ns2, sys.executable, "-c", FETCH, url).stdout,
            15,
            f"{url} from pod2",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/index.html", timeout=10) as resp:
            assert resp.read() == b"hello from pod1\n"
        # what made 127.0.0.1 work: portmap let 127/8 sources be routed out of the bridge
        assert Path(f"/proc/sys/net/ipv4/conf/{lab.bridge}/route_localnet").read_text().strip() == "1"
        assert _chains_of(lab.network)  # portmap's chain for pod1

        asyncio.run(cni.check(pod2))
        # bridge, then portmap with pod1's mapping; containernetworking/plugins#819 (in Debian's
        # 1.1.1): portmap's CHECK also looks for ip6tables rules, which an IPv4-only pod lacks
        check_err = None
        try:
            asyncio.run(cni.check(pod1))
        except PluginError as exc:
            check_err = exc
        if check_err is not None:
            assert check_err.plugin == "portmap" and "could not check ipv6 dnat" in str(check_err), check_err

        # DEL: pod1 by the same CNI, pod2 by a "restarted" daemon knowing only the sandbox id
        asyncio.run(cni.teardown(pod1))
        assert _ns_addrs(ns1, "eth0") == []
        assert lab.reserved() == [r2.pod_ip]
        assert _chains_of(lab.network) == []
        asyncio.run(lab.cni().teardown(PodNetwork(sandbox_id=pod2.sandbox_id, netns=ns2)))
        assert _ns_addrs(ns2, "eth0") == []
        assert lab.reserved() == []
        assert _run("ip", "-br", "link", "show", "master", lab.bridge).strip() == ""  # no veth left
        assert not list((lab.state / "results").iterdir())
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{host_port}/index.html", timeout=2)
    finally:
        if httpd is not None:
            httpd.kill()
            httpd.wait()
        for ns, pod in ((ns1, pod1), (ns2, pod2)):
            with contextlib.suppress(errdefs.ContainerdError):
                asyncio.run(cni.teardown(pod))
            asyncio.run(netns.remove(ns))
    assert not asyncio.run(netns.exists(ns1))
    assert not os.path.exists(ns1) and not os.path.exists(ns2)
    assert mounts_under(str(lab.ns_dir)) == []


FAILING_PLUGIN = """#!/bin/sh
cat > /dev/null
echo "pycd-fail: refusing $CNI_COMMAND" >&2
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion": "1.0.0", "code": 101, "msg": "pycd-fail says no", "details": "by design"}'
  exit 1
fi
exit 0
"""


def _assert_clean(lab: Lab, ns: str, network: str) -> None:
    assert _ns_addrs(ns, "eth0") == []
    assert lab.reserved(network) == []
    assert _chains_of(network) == []
    assert not (lab.state / "results").exists() or not [
        p for p in (lab.state / "results").iterdir() if network in p.name
    ]


def test_a_plugin_error_names_the_plugin_and_leaves_nothing(lab: Lab) -> None:
    bin_dir = lab.root / "failbin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pycd-fail").write_text(FAILING_PLUGIN)
    (bin_dir / "pycd-fail").chmod(0o755)
    conf = lab.root / "net.d-fail"
    network = lab.conflist(conf, name=f"{lab.network}-f", extra=[{"type": "pycd-fail"}])
    (ns,) = asyncio.run(_pods(lab, 1))
    cni = lab.cni(conf, (str(bin_dir), CNI_BIN))
    pod = PodNetwork(
        sandbox_id="podf" + "c" * 60,
        netns=ns,
        name="f",
        namespace="default",
        uid="uid-f",
        capabilities=CapabilityArgs(port_mappings=(PortMapping(free_port(), 80, "tcp", "127.0.0.1"),)),
    )
    try:
        with pytest.raises(PluginError) as ei:
            asyncio.run(cni.setup(pod))
        msg = str(ei.value)
        assert f'CNI plugin "pycd-fail" ADD on network "{network}" (eth0)' in msg
        assert "pycd-fail says no; by design [code 101]" in msg
        assert "stderr: pycd-fail: refusing ADD" in msg
        _assert_clean(lab, ns, network)
    finally:
        asyncio.run(netns.remove(ns))


def test_a_missing_plugin_is_a_clear_error_and_leaves_nothing(lab: Lab) -> None:
    conf = lab.root / "net.d-missing"
    network = lab.conflist(conf, name=f"{lab.network}-m", extra=[{"type": "pycd-no-such-plugin"}])
    (ns,) = asyncio.run(_pods(lab, 1))
    cni = lab.cni(conf)
    try:
        with pytest.raises(errdefs.FailedPrecondition, match="pycd-no-such-plugin"):
            asyncio.run(cni.status())
        with pytest.raises(errdefs.FailedPrecondition) as ei:
            asyncio.run(cni.setup(PodNetwork(sandbox_id="podm" + "d" * 60, netns=ns, name="m", namespace="x", uid="u")))
        assert f'CNI plugin "pycd-no-such-plugin" ADD on network "{network}"' in str(ei.value)
        assert f"not found in {CNI_BIN}" in str(ei.value)
        _assert_clean(lab, ns, network)
    finally:
        asyncio.run(netns.remove(ns))


def test_netns_create_remove_exists(lab: Lab) -> None:
    ns = asyncio.run(netns.create(lab.ns_dir))
    assert os.path.basename(ns).startswith("cni-")
    assert asyncio.run(netns.exists(ns))
    # a fresh namespace: only a loopback, down
    assert "lo" in _in_ns(ns, "ip", "-br", "link").stdout
    assert os.readlink("/proc/self/ns/net") != _in_ns(ns, "readlink", "/proc/self/ns/net").stdout.strip()
    # pinning an existing process's namespace (containerd's NewNetNSFromPID)
    same = asyncio.run(netns.create(lab.ns_dir, pid=os.getpid()))
    assert asyncio.run(netns.exists(same))
    assert os.stat(same).st_ino == os.stat("/proc/self/ns/net").st_ino
    for p in (ns, same):
        asyncio.run(netns.remove(p))
        assert not asyncio.run(netns.exists(p))
        asyncio.run(netns.remove(p))  # idempotent
    assert not asyncio.run(netns.exists(lab.root))  # a directory is not a namespace
    # failures leave nothing behind
    (lab.root / "afile").write_text("")
    with pytest.raises(errdefs.AlreadyExists):
        asyncio.run(netns.create(lab.root / "afile"))
    with pytest.raises(errdefs.NotFound, match="/proc/999999999/ns/net"):
        asyncio.run(netns.create(lab.ns_dir, pid=999999999))
    assert os.listdir(lab.ns_dir) == []

    async def cancelled_creates() -> None:
        for i in range(12):
            task = asyncio.ensure_future(netns.create(lab.ns_dir))
            for _ in range(i):
                await asyncio.sleep(0)  # cancel at a different step each time
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if task.cancelled():
                assert os.listdir(lab.ns_dir) == [], i
            else:
                await netns.remove(task.result())

    asyncio.run(cancelled_creates())
    assert mounts_under(str(lab.ns_dir)) == []
    assert mounts_under(str(lab.ns_dir)) == []


def _threads_elsewhere(me: int) -> list[str]:
    out = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            if os.stat(f"/proc/self/task/{tid}/ns/net").st_ino != me:
                out.append(tid)
    return out


def test_netns_create_leaves_no_thread_in_the_new_namespace(lab: Lab) -> None:
    """The namespace is made by a thread of its own (unshare moves only the calling thread): once
    create returns, every thread of ours that lives on -- the event loop's, the worker pool's,
    which open sockets -- is still in our namespace, and the pin is another namespace."""
    me = os.stat("/proc/self/ns/net").st_ino

    async def many() -> list[str]:
        return list(await asyncio.gather(*(netns.create(lab.ns_dir) for _ in range(8))))

    made = asyncio.run(many())
    try:
        assert len({os.stat(p).st_ino for p in made} | {me}) == 9  # eight new namespaces, none ours
        wait_for(lambda: not _threads_elsewhere(me), 10, "the unshare threads to end")
    finally:
        for p in made:
            asyncio.run(netns.remove(p))
    assert os.listdir(lab.ns_dir) == []
