"""pycrictl against the real containerd 1.6 CRI plugin (CNI bridge, local registry), and against our daemon.

One containerd with CRI on (tests/fixtures/containerd.py `cri=CriOptions(...)`) serves the module:
its pause image is busybox with Cmd ["sleep", "inf"] pushed to the session registry, its CNI
network a bridge with a unique name and /24. The fixture tears down every process, mount,
network namespace, iptables rule and the bridge it made, whether the tests pass or not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import images
from tests.fixtures.containerd import NETNS_DIR, Containerd, CriOptions, running_containerd
from tests.fixtures.procs import kill_pids, wait_for
from tests.fixtures.registry import Registry

from .daemon import running_daemon

pytestmark = pytest.mark.root

PYCRICTL = str(Path(sys.executable).parent / "pycrictl")
LOG_LINE_MAX = 64  # containerd splits longer lines into partial (P) records


class Cri:
    def __init__(self, ctrd: Containerd, registry: Registry, busybox_ref: str, workdir: Path) -> None:
        self.ctrd, self.registry, self.busybox_ref, self.workdir = ctrd, registry, busybox_ref, workdir

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PYCRICTL, "-r", self.ctrd.endpoint, *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"pycrictl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
                                 f"\n--- containerd log ---\n{self.ctrd.log.read_text()[-3000:]}")
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)


@pytest.fixture(scope="module")
def cri(registry: Registry, busybox_image: images.BuiltImage, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Cri]:
    if not Path("/usr/bin/containerd").exists() or not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs containerd and containernetworking-plugins (apt-get install containerd "
                    "containernetworking-plugins)")
    work = tmp_path_factory.mktemp("pycrictl")
    pause = images.build_busybox_image(work / "pause", name="docker.io/library/pause:3.9", cmd=["sleep", "inf"])
    images.push_to_registry(pause, registry.url, "library/pause", "3.9")
    images.push_to_registry(busybox_image, registry.url, "library/busybox", "cri")
    opts = CriOptions(sandbox_image=registry.ref("library/pause", "3.9"), insecure_registries=[registry.host],
                      max_container_log_line_size=LOG_LINE_MAX)
    with running_containerd(cri=opts) as ctrd:
        yield Cri(ctrd, registry, registry.ref("library/busybox", "cri"), work)


def test_version_and_info(cri: Cri) -> None:
    out = cri.run("version").stdout
    assert "RuntimeName:  containerd" in out
    assert "RuntimeApiVersion:  v1" in out
    info = cri.json("info")
    conditions = {c["type"]: c["status"] for c in info["status"]["conditions"]}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}, info["status"]
    assert info["config"]["sandboxImage"] == cri.ctrd.cri.sandbox_image  # type: ignore[union-attr]


def test_pull_images_inspecti_rmi(cri: Cri) -> None:
    ref = cri.busybox_ref
    r = cri.run("pull", ref)
    assert r.stdout.startswith("Image is up to date for sha256:"), r.stdout
    image_id = r.stdout.split()[-1]

    table = cri.run("images").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    repo = ref.rsplit(":", 1)[0]
    row = next(line.split() for line in table[1:] if line.startswith(repo + " "))
    assert row[:3] == [repo, "cri", image_id.split(":")[1][:13]]
    assert image_id in cri.run("images", "-q").stdout.split()
    digests = cri.run("images", "--digests").stdout
    assert "DIGEST" in digests.splitlines()[0]

    st = cri.json("inspecti", ref)
    assert st["status"]["id"] == image_id
    assert ref in st["status"]["repoTags"]
    assert int(st["status"]["size"]) > 0
    assert "imageSpec" in st["info"]  # verbose info decoded from JSON

    fs = cri.json("imagefsinfo")
    assert fs["status"]["imageFilesystems"][0]["fsId"]["mountpoint"].startswith(str(cri.ctrd.root))

    # rmi by tag; then the image is gone, and a second rmi says so with exit code 1
    r = cri.run("rmi", ref)
    assert f"Deleted: {ref}" in r.stdout
    assert image_id not in cri.run("images", "-q").stdout.split()
    r = cri.run("rmi", ref, check=False)
    assert r.returncode == 1 and "no such image" in r.stderr
    r = cri.run("inspecti", ref, check=False)
    assert r.returncode == 1 and "no such image" in r.stderr


def _iptables_has(name: str) -> bool:
    return f'name: \\"{name}\\"' in subprocess.run(["iptables-save", "-t", "nat"], capture_output=True,
                                                    text=True, check=False).stdout


def test_pod_and_container_lifecycle(cri: Cri) -> None:
    opts = cri.ctrd.cri
    assert opts is not None
    uid = uuid.uuid4().hex[:12]
    logdir = cri.workdir / f"logs-{uid}"
    pod_cfg = {"metadata": {"name": f"pod-{uid}", "namespace": "pycd", "uid": uid, "attempt": 1},
               "log_directory": str(logdir), "linux": {}}
    long_line = "x" * (3 * LOG_LINE_MAX + 5)
    script = (f"echo hello-out; echo hello-err >&2; echo {long_line}; echo last-line; "
              "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done")
    ctr_cfg = {"metadata": {"name": "box"}, "image": {"image": cri.busybox_ref},
               "command": ["sh", "-c", script], "log_path": "box.log", "linux": {}}
    pod_file = cri.workdir / f"pod-{uid}.json"
    ctr_file = cri.workdir / f"ctr-{uid}.yaml"  # crictl takes YAML too
    pod_file.write_text(json.dumps(pod_cfg))
    ctr_file.write_text(yaml.safe_dump(ctr_cfg))

    follower: subprocess.Popen[str] | None = None
    try:
        pod_id = cri.run("runp", str(pod_file)).stdout.strip()
        assert len(pod_id) == 64

        pods = cri.run("pods").stdout.splitlines()
        assert pods[0].split()[:3] == ["POD", "ID", "CREATED"]
        row = next(line for line in pods[1:] if line.startswith(pod_id[:13]))
        assert f"pod-{uid}" in row and "Ready" in row and "pycd" in row
        assert cri.run("pods", "-q", "--name", f"^pod-{uid}$").stdout.split() == [pod_id]
        assert cri.run("pods", "-q", "--state", "notready", "--name", uid).stdout.split() == []

        status = cri.json("inspectp", pod_id)
        assert status["status"]["state"] == "SANDBOX_READY"
        ip = status["status"]["network"]["ip"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(opts.subnet)
        netns = cri.ctrd.pod_netns()
        assert len(netns) == 1 and Path(netns[0]).exists()
        assert Path(f"/sys/class/net/{opts.bridge}").exists()
        assert _iptables_has(opts.network_name)

        # create pulls the (removed) image first; start; ps
        cid = cri.run("create", pod_id, str(ctr_file), str(pod_file)).stdout.strip()
        assert len(cid) == 64
        ps_all = cri.run("ps", "-a").stdout
        assert cid[:13] in ps_all and "Created" in ps_all
        assert cid not in cri.run("ps", "-q").stdout  # not running yet
        assert cri.run("start", cid).stdout.strip() == cid
        assert cri.run("ps", "-q", "--pod", pod_id).stdout.split() == [cid]
        row = next(line for line in cri.run("ps").stdout.splitlines() if line.startswith(cid[:13]))
        assert "Running" in row and "box" in row and f"pod-{uid}" in row and pod_id[:13] in row
        assert cri.busybox_ref in row.split()  # the image by name, not by id

        # exec (streamed, and through ExecSync with -s): output and exit code; -t without a terminal is
        # refused clearly (test_cri_streaming_client.py drives a real one through tmux)
        for sync in ([], ["-s"]):
            r = cri.run("exec", *sync, cid, "sh", "-c", "echo from-exec; echo to-err >&2; exit 3", check=False)
            assert (r.returncode, r.stdout, r.stderr) == (3, "from-exec\n", "to-err\n")
        r = cri.run("exec", cid, "cat", "/proc/1/cmdline")
        assert r.stdout == "sleep\0inf\0"  # the pod shares one PID namespace: PID 1 is our pause
        r = cri.run("exec", "-it", cid, "sh", check=False)
        assert r.returncode == 1 and "not a terminal" in r.stderr

        # logs: messages without the CRI prefix, partial records of the long line joined
        def logged() -> str | None:
            out = cri.run("logs", cid).stdout
            return out if "last-line" in out else None

        out = wait_for(logged, 20, "the container's output in its log")
        assert out == f"hello-out\n{long_line}\nlast-line\n"
        raw = (logdir / "box.log").read_text()
        assert " stdout P " in raw and " stdout F " in raw  # the runtime did split the long line
        r = cri.run("logs", cid)
        assert r.stderr == "hello-err\n"
        assert cri.run("logs", "--tail", "1", "--stream", "stdout", cid).stdout == "last-line\n"
        assert cri.run("logs", "--tail", "2", "--stream", "stdout", cid).stdout == f"{long_line}\nlast-line\n"
        stamped = cri.run("logs", "--timestamps", "--stream", "stdout", cid).stdout.splitlines()
        assert stamped[0].endswith(" hello-out") and stamped[0][:4].isdigit()

        stats = cri.run("stats").stdout
        assert cid[:13] in stats and "box" in stats

        full = cri.json("inspect", cid)
        assert full["status"]["state"] == "CONTAINER_RUNNING"
        assert full["info"]["pid"] > 0

        # follow the log while stopping: the follower prints the rest and exits by itself
        follower = subprocess.Popen([PYCRICTL, "-r", cri.ctrd.endpoint, "logs", "-f", "--stream", "stdout", cid],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cri.run("stop", "--timeout", "5", cid).stdout.strip() == cid
        fout, ferr = follower.communicate(timeout=20)
        assert follower.returncode == 0, ferr
        assert fout == f"hello-out\n{long_line}\nlast-line\ngot-term\n"
        ps_all = cri.run("ps", "-a").stdout
        assert "Exited" in next(line for line in ps_all.splitlines() if line.startswith(cid[:13]))

        assert cri.run("rm", cid).stdout.strip() == cid
        assert cid not in cri.run("ps", "-a", "-q").stdout

        assert "Stopped sandbox" in cri.run("stopp", pod_id).stdout
        assert not Path(netns[0]).exists()  # CNI DEL and netns removal happened
        assert not _iptables_has(opts.network_name)
        assert "NotReady" in next(line for line in cri.run("pods").stdout.splitlines()
                                  if line.startswith(pod_id[:13]))
        assert "Removed sandbox" in cri.run("rmp", pod_id).stdout
        assert pod_id not in cri.run("pods", "-q").stdout
        assert not list(cri.ctrd.bundles())
    finally:
        if follower is not None and follower.poll() is None:
            kill_pids([follower.pid])
            follower.wait(5)


def test_errors_are_clear(cri: Cri) -> None:
    r = cri.run("inspectp", "0123456789abcdef", check=False)
    assert r.returncode == 1 and "not found" in r.stderr.lower()
    r = cri.run("-r", "unix:///nonexistent/pycd.sock", "-t", "0.5", "version", check=False)
    assert r.returncode == 3 and "cannot reach the runtime at unix:///nonexistent/pycd.sock" in r.stderr
    r = cri.run("port-forward", "x", "8080:80", check=False)
    assert r.returncode == 1 and "not found" in r.stderr.lower(), r.stderr
    bad = cri.workdir / "bad.json"
    bad.write_text(json.dumps({"metadata": {"name": "p"}, "no_such_field": 1}))
    r = cri.run("runp", str(bad), check=False)
    assert r.returncode == 1 and "no_such_field" in r.stderr


def test_our_daemon_without_the_cri_plugin_says_it_has_no_cri() -> None:
    with running_daemon('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n') as daemon:
        r = subprocess.run([PYCRICTL, "-r", f"unix://{daemon.address}", "version"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1, r
        assert f"the daemon at unix://{daemon.address} does not serve the CRI API (runtime.v1)" in r.stderr, r.stderr
        r = subprocess.run([PYCRICTL, "-r", daemon.address, "pods"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "does not serve the CRI API (runtime.v1)" in r.stderr, r.stderr


def test_our_daemon_serves_images_and_pods(daemon: Any) -> None:
    r = subprocess.run([PYCRICTL, "-r", f"unix://{daemon.address}", "version"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "RuntimeName:  pycontainerd" in r.stdout, r
    # pods and containers are served (tests/integration/test_cri_pods.py drives them): empty lists here
    r = subprocess.run([PYCRICTL, "-r", daemon.address, "pods", "-q"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "", r
    r = subprocess.run([PYCRICTL, "-r", daemon.address, "ps", "-a", "-q"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == "", r


def test_cleanup_left_nothing_behind(registry: Registry, tmp_path: Path) -> None:
    """A pod left running and one whose infra process died (containerd deleted its task and bundle,
    not its netns) when the fixture ends: the fixture removes their netns, rules and bridge, and
    leaves alone an unused ``cni-*`` namespace made meanwhile by someone else (another engine's pod
    between its netns and its infra process)."""
    foreign = NETNS_DIR / f"cni-pycd-foreign-{uuid.uuid4().hex[:8]}"
    try:
        with contextlib.ExitStack() as stack:
            pause = images.build_busybox_image(tmp_path / "pause", name="docker.io/library/pause:3.9",
                                               cmd=["sleep", "inf"])
            images.push_to_registry(pause, registry.url, "library/pause", "leak")
            opts = CriOptions(sandbox_image=registry.ref("library/pause", "leak"),
                              insecure_registries=[registry.host])
            ctrd = stack.enter_context(running_containerd(cri=opts))
            assert ctrd.cri is not None
            pods = []
            for name in ("leaky", "dead"):
                cfg = tmp_path / f"{name}.json"
                cfg.write_text(json.dumps({"metadata": {"name": name, "namespace": "pycd", "uid": uuid.uuid4().hex}}))
                r = subprocess.run([PYCRICTL, "-r", ctrd.endpoint, "runp", str(cfg)], capture_output=True, text=True,
                                   timeout=60)
                assert r.returncode == 0, r.stderr
                pods.append(r.stdout.strip())
            netns = ctrd.pod_netns()
            assert len(netns) == 2, netns
            r = subprocess.run([PYCRICTL, "-r", ctrd.endpoint, "inspectp", pods[1]], capture_output=True, text=True,
                               timeout=60)
            kill_pids([int(json.loads(r.stdout)["info"]["pid"])])
            wait_for(lambda: len(ctrd.pod_netns()) == 1, 30, "containerd to delete the dead pod's task")
            assert all(Path(p).exists() for p in netns), netns  # the dead pod's netns stays: no bundle names it
            subprocess.run(["ip", "netns", "add", foreign.name], check=True, capture_output=True, timeout=30)
            bridge, network = ctrd.cri.bridge, ctrd.cri.network_name
            assert Path(f"/sys/class/net/{bridge}").exists() and _iptables_has(network)
        assert not any(Path(p).exists() for p in netns), netns
        assert not Path(f"/sys/class/net/{bridge}").exists()
        assert not _iptables_has(network)
        assert all(not p.name.startswith("cni-") or p.name not in {Path(n).name for n in netns}
                   for p in (NETNS_DIR.iterdir() if NETNS_DIR.exists() else []))
        assert foreign.exists(), "the fixture removed a namespace its containerd did not make"
    finally:
        subprocess.run(["ip", "netns", "del", foreign.name], capture_output=True, check=False, timeout=30)
