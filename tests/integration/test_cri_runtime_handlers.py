"""CRI runtime handlers (RuntimeClass) on our daemon and on containerd 1.6's CRI, same config.

Besides the default ``runc``, the engines have the handler ``pyrunc`` (``runtime_type =
"io.containerd.pyrunc.v2"``: runtime v2 resolves it to ``containerd-shim-pyrunc-v2``, our shim
installed in the venv's bin, on PATH for both daemons) passing some annotations through, and
``runc-opts`` (the runc type with an ``options`` table) and ``shim-path`` (the runc type with
``runtime_path``: Debian's ``containerd-shim-runc-v2``).  A pod's handler is its and its
containers' container records' runtime (``ctr c info``) and so the shim the task runs on.

Recursive read-only mounts per handler (ours only: containerd 1.6 predates them): what the shim a
handler's tasks run on supports, asked as containerd 2.x asks (our shim's runc, an external shim's
``-info``; Debian's 1.6 shim has no ``-info``, so ``shim-path`` has none), and CreateContainer refuses
``Mount.recursive_read_only`` on a handler without them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.runtime.v2.runc.options import oci_pb2
from tests.fixtures.procs import cmdline, unmount_all, wait_for

from .test_cri_pods import Engine, Setup, _ours, _theirs, busybox, container_config, pod_config, setup  # noqa: F401
from .test_cri_security import _host_has_rro, _pod, _sc

pytestmark = pytest.mark.root
# ruff: noqa: F811 - the fixtures imported above are parameters here

VENV_BIN = Path(sys.executable).parent
PYRUNC = "io.containerd.pyrunc.v2"
RUNTIMES = {
    "pyrunc": f'runtime_type = "{PYRUNC}"\npod_annotations = ["pass.example.com/*"]\n'
              'container_annotations = ["cpass.example.com/*"]',
    "shim-path": 'runtime_type = "io.containerd.runc.v2"\nruntime_path = "/usr/bin/containerd-shim-runc-v2"',
    "runc-opts": 'runtime_type = "io.containerd.runc.v2"\n[plugins."io.containerd.grpc.v1.cri"'
                 '.containerd.runtimes.runc-opts.options]\nBinaryName = "/usr/sbin/runc"\nNoNewKeyring = true',
}


@pytest.fixture(scope="module")
def venv_path() -> Iterator[None]:
    if not (VENV_BIN / "containerd-shim-pyrunc-v2").exists():
        pytest.skip("containerd-shim-pyrunc-v2 is not installed in the venv (pip install -e .)")
    with pytest.MonkeyPatch.context() as mp:  # both daemons inherit it (and find the shim there)
        mp.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        yield


@pytest.fixture(scope="module")
def ours_h(setup: Setup, venv_path: None) -> Iterator[Engine]:
    with _ours(setup, runtimes=RUNTIMES) as e:
        yield e


@pytest.fixture(scope="module")
def theirs_h(setup: Setup, venv_path: None) -> Iterator[Engine]:
    with _theirs(setup, runtimes=RUNTIMES) as e:
        yield e


@pytest.fixture(params=["pycontainerd", "containerd"])
def engine(request: pytest.FixtureRequest) -> Engine:
    e = request.getfixturevalue("ours_h" if request.param == "pycontainerd" else "theirs_h")
    assert isinstance(e, Engine)
    return e


def _ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent of {pid}")


def _runtime(engine: Engine, cid: str) -> dict[str, Any]:
    return dict(json.loads(engine.ctr("containers", "info", cid))["Runtime"])


def _run_pod(engine: Engine, tmp_path: Path, handler: str, **extra: Any) -> str:
    return engine.crictl("runp", "--runtime", handler, str(pod_config(tmp_path, **extra))).stdout.strip()


def _remove(engine: Engine, pod: str) -> None:
    engine.crictl("stopp", pod, check=False)
    engine.crictl("rmp", pod, check=False)


def test_a_pod_on_the_pyrunc_handler_runs_on_that_shim(engine: Engine, busybox: str, tmp_path: Path) -> None:
    annotations = {"pass.example.com/a": "1", "pass.example.com/a/b": "2", "cpass.example.com/c": "3",
                   "note": "hello"}
    cfg = pod_config(tmp_path, annotations=annotations)
    pod = engine.crictl("runp", "--runtime", "pyrunc", str(cfg)).stdout.strip()
    try:
        info = engine.crictl_json("inspectp", pod)
        assert info["status"]["state"] == "SANDBOX_READY"
        assert info["status"]["runtimeHandler"] == "pyrunc"
        assert _runtime(engine, pod) == {"Name": PYRUNC, "Options": None}
        # the infra process's shim is the external binary (containerd-shim-pyrunc-v2 from PATH)
        shim = _ppid(int(info["info"]["pid"]))
        assert "containerd-shim-pyrunc-v2" in cmdline(shim), cmdline(shim)
        # the pod's annotations the handler lets through (``*`` stops at ``/``) are in its spec
        ann = info["info"]["runtimeSpec"]["annotations"]
        assert ann["pass.example.com/a"] == "1"
        assert "pass.example.com/a/b" not in ann and "note" not in ann and "cpass.example.com/c" not in ann
        assert ann["io.kubernetes.cri.container-type"] == "sandbox"

        engine.crictl("pull", busybox)
        ccfg = container_config(tmp_path, busybox, "sleep 100000", name="c1",
                                annotations={"cpass.example.com/x": "4", "pass.example.com/y": "5"})
        cid = engine.crictl("create", pod, str(ccfg), str(cfg)).stdout.strip()
        assert _runtime(engine, cid) == {"Name": PYRUNC, "Options": None}
        engine.crictl("start", cid)
        cinfo = engine.crictl_json("inspect", cid)
        assert cinfo["status"]["state"] == "CONTAINER_RUNNING"
        cshim = _ppid(int(cinfo["info"]["pid"]))
        assert "containerd-shim-pyrunc-v2" in cmdline(cshim), cmdline(cshim)
        cann = cinfo["info"]["runtimeSpec"]["annotations"]
        # the pod's (by pod_annotations) and the container's (by container_annotations)
        assert cann["pass.example.com/a"] == "1" and cann["cpass.example.com/x"] == "4"
        assert "pass.example.com/y" not in cann and "note" not in cann
        assert cann["io.kubernetes.cri.container-type"] == "container"
        assert engine.crictl("exec", "-s", cid, "echo", "hi").stdout.strip() == "hi"
        engine.crictl("stop", cid)
        engine.crictl("rm", cid)
    finally:
        _remove(engine, pod)


def test_the_handler_options_are_the_record_runtime_options(engine: Engine, tmp_path: Path) -> None:
    pod = _run_pod(engine, tmp_path, "runc-opts")
    try:
        assert engine.crictl_json("inspectp", pod)["status"]["state"] == "SANDBOX_READY"
        rt = _runtime(engine, pod)
        # ctr 1.6 prints the Any as it is: the same bytes on both engines
        assert rt["Name"] == "io.containerd.runc.v2" and rt["Options"]["type_url"] == "containerd.runc.v1.Options"
        opts = oci_pb2.Options.FromString(base64.b64decode(rt["Options"]["value"]))
        assert opts == oci_pb2.Options(binary_name="/usr/sbin/runc", no_new_keyring=True)
        assert rt["Options"]["value"] == "EAEyDi91c3Ivc2Jpbi9ydW5j"
    finally:
        _remove(engine, pod)


def test_runtime_path_runs_that_shim_binary(engine: Engine, tmp_path: Path) -> None:
    if not Path("/usr/bin/containerd-shim-runc-v2").exists():
        pytest.skip("needs Debian's containerd-shim-runc-v2")
    pod = _run_pod(engine, tmp_path, "shim-path")
    try:
        info = engine.crictl_json("inspectp", pod)
        assert info["status"]["state"] == "SANDBOX_READY"
        assert _runtime(engine, pod) == {"Name": "io.containerd.runc.v2", "Options": None}
        shim = _ppid(int(info["info"]["pid"]))
        assert cmdline(shim).split()[0] == "/usr/bin/containerd-shim-runc-v2", cmdline(shim)
    finally:
        _remove(engine, pod)


def test_an_unknown_handler_is_refused(engine: Engine, tmp_path: Path) -> None:
    cfg = json.loads(pod_config(tmp_path).read_text())
    request = pb.RunPodSandboxRequest(runtime_handler="nope")
    request.config.metadata.name = cfg["metadata"]["name"]
    request.config.metadata.namespace = cfg["metadata"]["namespace"]
    request.config.metadata.uid = cfg["metadata"]["uid"]
    code, details = engine.call("RunPodSandbox", request)
    # the same message; containerd 1.6 answers it UNKNOWN (a plain error), we NOT_FOUND (errdefs)
    assert code.name == ("NOT_FOUND" if engine.name == "pycontainerd" else "UNKNOWN"), (code, details)
    assert 'failed to get sandbox runtime: no runtime for "nope" is configured' in str(details)
    assert engine.crictl("pods", "-q", "--name", cfg["metadata"]["name"]).stdout.strip() == ""


def test_status_lists_the_handlers_and_a_restart_keeps_the_external_shim(ours_h: Engine, tmp_path: Path) -> None:
    code, resp = ours_h.call("Status", pb.StatusRequest())
    assert code.name == "OK"
    assert [h.name for h in resp.runtime_handlers] == ["", "pyrunc", "runc", "runc-opts", "shim-path"]
    pod = _run_pod(ours_h, tmp_path, "pyrunc")
    try:
        pid = int(ours_h.crictl_json("inspectp", pod)["info"]["pid"])
        shim = _ppid(pid)
        ours_h.restart()
        info = ours_h.crictl_json("inspectp", pod)
        assert info["status"]["state"] == "SANDBOX_READY" and int(info["info"]["pid"]) == pid
        assert info["info"]["runtimeType"] == PYRUNC and info["info"]["runtimeHandler"] == "pyrunc"
        ours_h.crictl("stopp", pod)
        ours_h.crictl("rmp", pod)
        wait_for(lambda: not Path(f"/proc/{shim}").exists() or "containerd-shim-pyrunc-v2" not in cmdline(shim),
                 20, "the pod's shim to exit after RemovePodSandbox", interval=0.1)
    finally:
        _remove(ours_h, pod)


def test_recursive_read_only_mounts_per_handler(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """Status says per handler whether recursive read-only mounts work: where runc and the kernel have
    them (here runc 1.1.5 lists ``rro``, kernel 6.x), for ``pyrunc`` through our shim's ``-info``, not
    for ``shim-path`` (Debian's 1.6 shim answers ``-info`` with its usage: no features; it said yes
    before, asking runc directly although the tasks run on that shim).  CreateContainer with
    ``recursive_read_only`` on ``shim-path`` is INVALID_ARGUMENT naming the mount and leaves no
    container (it was created, the shim passing "rro" on to runc); on ``pyrunc`` the submount is
    read-only.  containerd 1.6 ignores the field on both: a plain "ro" bind, its submount writable."""
    if not Path("/usr/bin/containerd-shim-runc-v2").exists():
        pytest.skip("needs Debian's containerd-shim-runc-v2")
    rro = _host_has_rro()
    if engine.name == "pycontainerd":
        code, resp = engine.call("Status", pb.StatusRequest())
        assert code.name == "OK", resp
        assert {h.name: h.features.recursive_read_only_mounts for h in resp.runtime_handlers} == {
            "": rro, "pyrunc": rro, "runc": rro, "runc-opts": rro, "shim-path": False}
    vol = tmp_path / "vol"
    (vol / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pycd-rro", str(vol / "sub")], check=True)
    try:
        for handler in ("shim-path", "pyrunc"):
            with _pod(engine, busybox, tmp_path, runtime_handler=handler) as pod:
                m = pb.Mount(container_path="/vol", host_path=str(vol), readonly=True, recursive_read_only=True)
                code, resp = pod.create(_sc(), mounts=[m])
                if engine.name == "pycontainerd" and (handler == "shim-path" or not rro):
                    assert code.name == "INVALID_ARGUMENT", (code, resp)
                    assert "mount '/vol'" in resp and f"RROUnsupported: runtime handler '{handler}'" in resp, resp
                    assert engine.crictl("ps", "-a", "-q", "--pod", pod.id).stdout.strip() == ""
                    continue
                assert code.name == "OK", f"[{engine.name}] {handler}: {resp}"
                cid = resp.container_id
                code, msg = engine.call("StartContainer", pb.StartContainerRequest(container_id=cid))
                assert code.name == "OK", f"[{engine.name}] {handler}: {msg}"
                assert pod.sh(cid, "touch /vol/x")[0] != 0
                sub_writable = pod.sh(cid, "touch /vol/sub/x")[0] == 0
                assert sub_writable == (engine.name == "containerd"), f"[{engine.name}] {handler}"
    finally:
        unmount_all(str(vol))
