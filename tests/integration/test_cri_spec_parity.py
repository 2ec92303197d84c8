"""The OCI specs of one pod and its container on our daemon and on containerd 1.6's CRI, compared.

The same PodSandboxConfig and ContainerConfig go to both engines; each spec (``inspectp`` /
``inspect``'s ``info.runtimeSpec``) is normalised for what must differ (the ids, the paths
under each engine's root/state, the infra process's pid in namespace paths, the cgroup path's
prefix) and flattened to ``path -> value`` (mounts keyed by destination, namespaces and rlimits
by type, env by name, capabilities as sets), and every remaining difference is listed.

Deliberate differences that remain: none for this pod and container (``DELIBERATE`` would list
each, with its reason).  Found and fixed (containerd 1.6's behaviour): the pod's /dev/shm (a
tmpfs under the sandbox's state dir, bind-mounted read-only into the infra container and
read-write into every container; the host's with IPC NODE) instead of a tmpfs per container; no
``/run`` tmpfs and no ``RLIMIT_NOFILE`` rlimit in CRI specs; the sandbox's read-only
``/etc/resolv.conf``; ``HOSTNAME`` in the container's environment; the
``io.kubernetes.cri.sandbox-uid`` annotation; the container mounts' order (the config's and the
pod's files sorted by depth, after the defaults); the container's network, IPC and UTS
namespaces always joined through the infra process (also when they are the host's), and its
pid namespace too in a host-pid pod.  Three variants (``VARIANTS``): a plain pod; host IPC with
a read-only rootfs, a tty, a mount and env; host network and pid with a user, capabilities,
no_new_privs and resources.

The verbose ``info`` around the specs is compared too (``test_verbose_info_matches_containerd``):
the same keys, the same value shapes, the same ``config``.

Besides the specs, from inside the containers: two containers of one pod share /dev/shm (a file
one writes, the other reads), and with the pod's IPC namespace NODE they see the host's.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb

from .test_cri_pods import Engine, container_config, pod_config
from .test_cri_pods import busybox as busybox
from .test_cri_pods import ours as ours
from .test_cri_pods import setup as setup
from .test_cri_pods import theirs as theirs

pytestmark = pytest.mark.root

# path in the flattened spec -> why ours differs from containerd 1.6's on purpose; each entry must
# be an actual difference (a stale entry fails the test too).  None left for this pod and container.
DELIBERATE: dict[str, str] = {}


def _normalise(spec: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    text = json.dumps(spec)
    for real, name in ids.items():
        text = text.replace(real, name)
    out = json.loads(text)
    for m in out.get("mounts", []):
        src = m.get("source", "")
        # <root or state>/io.containerd.grpc.v1.cri/sandboxes/<SID>/x -> <sandbox>/x (ours: <cri state>/sandboxes)
        m["source"] = re.sub(r"^/.*/sandboxes/<SID>/", "<sandbox>/", src)
        m["source"] = re.sub(r"^/.*/containers/<CID>/", "<container>/", m["source"])
    for ns in out.get("linux", {}).get("namespaces", []):
        if "path" in ns:
            ns["path"] = re.sub(r"^/proc/\d+/", "/proc/<pid>/", ns["path"])
            ns["path"] = re.sub(r"^/.*/netns/.*$", "<netns>", ns["path"])
    if "cgroupsPath" in out.get("linux", {}):
        out["linux"]["cgroupsPath"] = out["linux"]["cgroupsPath"].rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return out


def _flatten(spec: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
            return
        if isinstance(v, list) and prefix.endswith("mounts"):
            flat[f"{prefix}(order)"] = [m["destination"] for m in v]  # a later mount shadows an earlier one
            seen: dict[str, int] = {}
            for m in v:
                d = m["destination"]
                seen[d] = seen.get(d, 0) + 1
                key = d if seen[d] == 1 else f"{d}#{seen[d]}"
                walk(f"{prefix}[{key}]", {k: x for k, x in m.items() if k != "destination"})
            return
        if isinstance(v, list) and prefix.endswith(("namespaces", "rlimits")):
            for x in v:
                walk(f"{prefix}[{x['type']}]", {k: y for k, y in x.items() if k != "type"})
            return
        if isinstance(v, list) and prefix.endswith(".env"):
            for e in v:
                k, _, val = e.partition("=")
                flat[f"{prefix}[{k}]"] = val
            return
        if isinstance(v, list) and prefix.startswith("process.capabilities"):
            flat[prefix] = sorted(v)
            return
        flat[prefix] = v

    walk("", spec)
    return flat


def _diff(ours_: dict[str, Any], theirs_: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    a, b = _flatten(ours_), _flatten(theirs_)
    missing = object()
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out[k] = ("<absent>" if va is missing else va, "<absent>" if vb is missing else vb)
    return out


def _judge(kind: str, diff: dict[str, tuple[Any, Any]]) -> None:
    remaining = {}
    for k, (mine, theirs_) in diff.items():
        if k in DELIBERATE:
            continue
        remaining[k] = (mine, theirs_)
    listing = "\n".join(f"  {k}: ours={v[0]!r} containerd={v[1]!r}" for k, v in remaining.items())
    assert not remaining, f"{kind} specs differ ({len(remaining)}):\n{listing}"


def _pod_and_container(engine: Engine, image: str, tmp_path: Path, podcfg: Path, script: str,
                       name: str = "box", **extra: Any) -> tuple[str, str]:
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()
    engine.crictl("pull", image)
    cid = engine.crictl("create", pod, str(container_config(tmp_path, image, script, name=name, **extra)),
                        str(podcfg)).stdout.strip()
    engine.crictl("start", cid)
    return pod, cid


HOST_IPC = {"security_context": {"namespace_options": {"ipc": 2}}}
# (pod config extras, container config extras) per variant; "<tmp>" is the test's tmp_path
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    # the host's IPC (and /dev/shm), a read-only rootfs (the pod's files read-only, its shm not),
    # a config mount, a tty, a working directory, an env var the image does not set
    "host-ipc-readonly-tty": ({"linux": HOST_IPC}, {
        "tty": True, "stdin": True, "working_dir": "/tmp",
        "envs": [{"key": "GREETING", "value": "hello"}, {"key": "HOSTNAME", "value": "mine"}],
        "mounts": [{"container_path": "/data", "host_path": "<tmp>", "readonly": True}],
        "linux": {"security_context": {**HOST_IPC["security_context"], "readonly_rootfs": True}}}),
    # the host's network and pid namespaces; a user, capabilities added and dropped, no_new_privs,
    # resources, an oom score
    "host-network-pid-security": (
        {"host_network": True, "linux": {"security_context": {"namespace_options": {"network": 2, "pid": 2}}}},
        {"linux": {"security_context": {"namespace_options": {"network": 2, "pid": 2},
                                        "run_as_user": {"value": 1234}, "no_new_privs": True,
                                        "capabilities": {"add_capabilities": ["SYS_ADMIN"],
                                                         "drop_capabilities": ["NET_RAW"]}},
                   "resources": {"cpu_shares": 512, "memory_limit_in_bytes": 128 << 20, "oom_score_adj": 500}}}),
    # privileged, with the kubelet's masked and read-only paths (privileged drops them)
    "privileged": ({"linux": {"security_context": {"privileged": True}}}, {
        "linux": {"security_context": {"privileged": True, "masked_paths": ["/proc/kcore"],
                                       "readonly_paths": ["/proc/sys"]}}}),
    # unprivileged with the kubelet's masked and read-only paths and the runtime's default seccomp
    "masked-seccomp": ({}, {
        "linux": {"security_context": {"masked_paths": ["/proc/kcore", "/proc/keys"],
                                       "readonly_paths": ["/proc/sys", "/proc/bus"],
                                       "seccomp": {"profile_type": 0}}}}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pod_and_container_specs_match_containerd(ours: Engine, theirs: Engine, busybox: str,
                                                  tmp_path: Path, variant: str) -> None:
    pod_extra, ctr_extra = json.loads(json.dumps(VARIANTS[variant]).replace("<tmp>", str(tmp_path)))
    # one config, both engines
    fixed_pod = pod_config(tmp_path, name=f"parity-{uuid.uuid4().hex[:8]}", **pod_extra)
    specs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for engine in (ours, theirs):
        pod, cid = _pod_and_container(engine, busybox, tmp_path, fixed_pod, "sleep 1000", **ctr_extra)
        try:
            ids = {pod: "<SID>", cid: "<CID>"}
            pspec = _normalise(engine.crictl_json("inspectp", pod)["info"]["runtimeSpec"], ids)
            cspec = _normalise(engine.crictl_json("inspect", cid)["info"]["runtimeSpec"], ids)
            specs[engine.name] = (pspec, cspec)
        finally:
            engine.crictl("stopp", pod, check=False)
            engine.crictl("rmp", pod, check=False)
    (op, oc), (tp, tc) = specs["pycontainerd"], specs["containerd"]
    pod_diff, ctr_diff = _diff(op, tp), _diff(oc, tc)
    stale = [k for k in DELIBERATE if k not in pod_diff and k not in ctr_diff]
    assert not stale, f"DELIBERATE lists differences that are gone: {stale}"
    errors = []
    for kind, d in (("sandbox", pod_diff), ("container", ctr_diff)):
        try:
            _judge(kind, d)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("ipc", ["pod", "node"])
def test_containers_of_a_pod_share_dev_shm(ours: Engine, theirs: Engine, busybox: str,
                                           tmp_path: Path, ipc: str) -> None:
    for engine in (ours, theirs):
        extra: dict[str, Any] = {}
        if ipc == "node":
            extra["linux"] = {"security_context": {"namespace_options": {"ipc": 2}}}
        podcfg = pod_config(tmp_path, **extra)
        pod = engine.crictl("runp", str(podcfg)).stdout.strip()
        marker = f"pycd-shm-{uuid.uuid4().hex[:8]}"
        host_file = Path("/dev/shm") / marker
        try:
            engine.crictl("pull", busybox)
            cids = []
            for name in ("a", "b"):
                cfg = container_config(tmp_path, busybox, "sleep 1000", name=name, **extra)
                cid = engine.crictl("create", pod, str(cfg), str(podcfg)).stdout.strip()
                engine.crictl("start", cid)
                cids.append(cid)
            a, b = cids
            engine.crictl("exec", "-s", a, "sh", "-c", f"echo shared > /dev/shm/{marker}")
            r = engine.crictl("exec", "-s", b, "cat", f"/dev/shm/{marker}", check=False)
            assert r.stdout.strip() == "shared", f"[{engine.name}] /dev/shm is not shared by the pod: {r}"
            if ipc == "node":
                assert host_file.read_text().strip() == "shared", f"[{engine.name}] not the host's /dev/shm"
            else:
                assert not host_file.exists(), f"[{engine.name}] the pod's /dev/shm is the host's"
            if ipc == "pod":  # the pod's own tmpfs, mounted while the pod runs, gone once it is stopped
                assert f"/sandboxes/{pod}/shm " in Path("/proc/self/mountinfo").read_text()
                engine.crictl("stopp", pod)
                assert f"/sandboxes/{pod}/shm " not in Path("/proc/self/mountinfo").read_text(), \
                    f"[{engine.name}] the pod's shm outlives StopPodSandbox"
        finally:
            engine.crictl("stopp", pod, check=False)
            engine.crictl("rmp", pod, check=False)
            host_file.unlink(missing_ok=True)
        assert f"/sandboxes/{pod}/shm" not in Path("/proc/self/mountinfo").read_text(), \
            f"[{engine.name}] the pod's shm outlives RemovePodSandbox"


# keys ours has beside containerd 1.6's in a verbose info (none conflicts with one of its)
OUR_EXTRA_INFO_KEYS = {"pod": {"sandboxID", "netns"}, "container": set()}


def _verbose_info(engine: Engine, kind: str, id_: str) -> dict[str, Any]:
    if kind == "pod":
        code, resp = engine.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=id_, verbose=True))
    else:
        code, resp = engine.call("ContainerStatus", pb.ContainerStatusRequest(container_id=id_, verbose=True))
    assert code == grpc.StatusCode.OK, resp
    assert list(resp.info) == ["info"], resp.info
    info = json.loads(resp.info["info"])
    assert isinstance(info, dict)
    return info


def _shape(v: Any) -> Any:
    """A JSON value's shape: objects by key, lists by their items' shapes, scalars by type."""
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return sorted({json.dumps(_shape(x), sort_keys=True) for x in v})
    return type(v).__name__


def test_verbose_info_matches_containerd(ours: Engine, theirs: Engine, busybox: str, tmp_path: Path) -> None:
    """``crictl inspect`` / ``inspectp``'s ``info`` as containerd 1.6 writes it (Go's encoding/json of
    its ContainerInfo / SandboxInfo): the same keys, ``config`` the CRI config with proto field names,
    enums and int64s as numbers, unset fields left out, so that scripts' paths (``.info.pid``,
    ``.info.config.log_path``, ``.info.runtimeSpec.process.args``) resolve on both engines."""
    podcfg = pod_config(tmp_path, name=f"info-{uuid.uuid4().hex[:8]}")
    extra: dict[str, Any] = {
        "linux": {"security_context": {"run_as_user": {"value": 1234}, "namespace_options": {"pid": 1}},
                  "resources": {"memory_limit_in_bytes": 128 << 20, "cpu_shares": 512}},
        "tty": True}
    infos: dict[str, dict[str, dict[str, Any]]] = {}
    for engine in (ours, theirs):
        pod, cid = _pod_and_container(engine, busybox, tmp_path, podcfg, "sleep 1000", **extra)
        try:
            pinfo, cinfo = _verbose_info(engine, "pod", pod), _verbose_info(engine, "container", cid)
            # the paths people script against, through pycrictl's inspect as through the raw answer
            for info in (cinfo, engine.crictl_json("inspect", cid)["info"]):
                assert info["pid"] > 0 and info["sandboxID"] == pod and info["snapshotKey"] == cid
                assert info["snapshotter"] == "overlayfs" and info["removing"] is False
                assert info["config"]["metadata"]["name"] == "box"
                assert info["config"]["log_path"] == "box.log"
                assert info["config"]["linux"]["security_context"]["run_as_user"] == {"value": 1234}
                assert info["config"]["linux"]["security_context"]["namespace_options"] == {"pid": 1}
                assert info["config"]["linux"]["resources"]["memory_limit_in_bytes"] == 128 << 20
                assert info["runtimeSpec"]["process"]["args"] == ["sh", "-c", "sleep 1000"]
            for info in (pinfo, engine.crictl_json("inspectp", pod)["info"]):
                assert info["pid"] > 0 and info["snapshotKey"] == pod and info["snapshotter"] == "overlayfs"
                assert info["processStatus"] == "running" and info["netNamespaceClosed"] is False
                assert info["config"]["metadata"]["name"] == podcfg.stem
                assert info["config"]["log_directory"] == str(tmp_path / "logs")
                assert info["config"]["dns_config"]["servers"] == ["10.0.0.10"]
                assert "network" not in info["config"]["linux"]["security_context"]["namespace_options"]  # POD: 0
                assert info["cniResult"]["Interfaces"]["eth0"]["IPConfigs"][0]["IP"]
                assert info["runtimeSpec"]["process"]["args"]
            infos[engine.name] = {"pod": pinfo, "container": cinfo}
        finally:
            engine.crictl("stopp", pod, check=False)
            engine.crictl("rmp", pod, check=False)
    for kind in ("pod", "container"):
        mine, theirs_ = infos["pycontainerd"][kind], infos["containerd"][kind]
        assert set(theirs_) - set(mine) == set(), f"{kind}: keys containerd has and ours lacks"
        assert set(mine) - set(theirs_) == OUR_EXTRA_INFO_KEYS[kind], f"{kind}: keys only ours has"
        # the CRI config as sent, marshalled the same way
        assert mine["config"] == theirs_["config"], kind
        for key in set(theirs_) - {"runtimeSpec"}:
            a, b = (_normal_cni(x) if key == "cniResult" else x for x in (mine[key], theirs_[key]))
            assert _shape(a) == _shape(b), (kind, key, mine[key], theirs_[key])


def _normal_cni(result: dict[str, Any]) -> dict[str, Any]:
    """go-cni's Result without what the two networks make differ: the host-side interfaces' names
    (the veth's, the bridge's), the routes (containerd's fixture conflist has a default route, ours
    none: the list's items)."""
    def name(k: str, v: dict[str, Any]) -> str:
        return k if v["Sandbox"] else "<veth>" if k.startswith("veth") else "<bridge>"

    ifaces = {name(k, v): v for k, v in result["Interfaces"].items()}
    assert isinstance(result["Routes"], list)
    return {**result, "Interfaces": ifaces, "Routes": []}
