"""pycrictl's run / update / logs -f --since / stats -a / rmp -a / rmi --prune, a container
that exits by itself, one shim per pod -- on our daemon and on containerd 1.6's CRI alike.

Uses the engines, registry and CNI set-up of ``test_cri_pods`` (module fixtures re-imported
here, so this module starts its own daemon, containerd and registry).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from pycontainerd.api.cri.runtime.v1 import api_pb2 as pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.fixtures.procs import kill_pids, wait_for

from .test_cri_pods import PYCRICTL, Engine, busybox, engine, ours, pod_config, setup, theirs
from .test_cri_stats_events import _EventStream

__all__ = ["busybox", "engine", "ours", "setup", "theirs"]  # fixtures, used by name

pytestmark = pytest.mark.root


def _ctr_config(tmp_path: Path, image: str, script: str, name: str) -> Path:
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"metadata": {"name": name}, "image": {"image": image},
                                "command": ["sh", "-c", script], "log_path": f"{name}.log", "linux": {}}))
    return path


def _pods(engine: Engine) -> list[str]:
    return engine.crictl("pods", "-q").stdout.split()


def _state(engine: Engine, cid: str) -> dict[str, Any]:
    return dict(engine.crictl_json("inspect", cid)["status"])


def _memory_limit(engine: Engine, cid: str) -> int:
    out = engine.crictl("exec", "-s", cid, "sh", "-c",
                        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
                        ).stdout.strip()
    return int(out)


def test_run_update_logs_stats_rmp_rmi(engine: Engine, busybox: str, tmp_path: Path) -> None:
    podcfg = pod_config(tmp_path)
    follower: subprocess.Popen[str] | None = None
    try:
        # run: pod + pull + create + start; the container id on stdout, the pod's on stderr
        script = "echo first; echo second >&2; echo third; sleep 1000"
        r = engine.crictl("run", str(_ctr_config(tmp_path, busybox, script, "web")), str(podcfg))
        cid = r.stdout.strip()
        pod = r.stderr.split("pod ", 1)[1].split()[0]
        assert len(cid) == 64 and pod in _pods(engine)
        assert cid in engine.crictl("ps", "-q", "--pod", pod).stdout.split()

        # update: the new memory limit reaches the container's cgroup and the stored spec
        assert engine.crictl("update", "--memory", "64m", "--cpu-quota", "50000", "--cpu-period", "100000",
                             cid).stdout.strip() == cid
        assert _memory_limit(engine, cid) == 64 << 20
        res = engine.crictl_json("inspect", cid)["info"]["runtimeSpec"]["linux"]["resources"]
        assert res["memory"]["limit"] == 64 << 20 and res["cpu"]["quota"] == 50000, res
        r = engine.crictl("update", cid, check=False)
        assert r.returncode == 1 and "name a limit" in r.stderr

        # logs: --tail, --since, --timestamps, --limit-bytes
        wait_for(lambda: "third" in engine.crictl("logs", cid).stdout, 30, "the container's log lines")
        assert engine.crictl("logs", "--tail", "1", "--stream", "stdout", cid).stdout == "third\n"
        assert engine.crictl("logs", "--since", "1h", "-s", "stdout", cid).stdout == "first\nthird\n"
        assert engine.crictl("logs", "--since", str(time.time() + 3600), cid).stdout == ""
        stamped = engine.crictl("logs", "-t", "--stream", "stdout", cid).stdout.splitlines()
        assert stamped[0].endswith("Z first") and stamped[0][:2] == "20", stamped
        assert engine.crictl("logs", "--limit-bytes", "3", "--stream", "stdout", cid).stdout == "fir"

        # a container that exits by itself: logs -f ends with it; stats -a lists it, stats does not
        quitter = engine.crictl("create", pod, str(_ctr_config(
            tmp_path, busybox, "echo a; sleep 1; echo b; exit 3", "quitter")), str(podcfg)).stdout.strip()
        follower = subprocess.Popen([PYCRICTL, "-r", engine.endpoint, "logs", "-f", quitter],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        engine.crictl("start", quitter)
        out, err = follower.communicate(timeout=60)
        assert (follower.returncode, out) == (0, "a\nb\n"), err
        st = _state(engine, quitter)
        assert (st["state"], st["exitCode"], st["reason"]) == ("CONTAINER_EXITED", 3, "Error"), st
        running = engine.crictl("stats", "-o", "json").stdout
        everything = engine.crictl("stats", "-a", "-o", "json").stdout
        assert quitter not in running and cid in running
        assert quitter in everything and cid in everything
        table = engine.crictl("stats", "-a").stdout
        assert table.splitlines()[0].split()[:3] == ["CONTAINER", "NAME", "CPU"] and "quitter" in table

        # rmp -a: a ready pod needs -f; with it, every pod goes
        r = engine.crictl("rmp", "-a", check=False)
        assert r.returncode == 1 and "stop it first" in r.stderr and pod in _pods(engine)
        assert f"Removed sandbox {pod}" in engine.crictl("rmp", "-a", "-f").stdout
        assert _pods(engine) == []
        assert "No pods to remove" in engine.crictl("rmp", "-a").stderr

        # rmi --prune: no container uses busybox any more; the sandbox image stays
        pruned = engine.crictl("rmi", "--prune").stdout
        assert f"Deleted: {busybox}" in pruned
        assert engine.opts.sandbox_image not in pruned
        assert engine.crictl_json("inspecti", engine.opts.sandbox_image)["status"]["id"]
    finally:
        if follower is not None and follower.poll() is None:
            kill_pids([follower.pid])
            follower.wait(5)
        for p in _pods(engine):
            engine.crictl("rmp", "-f", p, check=False)


def test_run_removes_its_pod_when_the_container_fails(engine: Engine, tmp_path: Path) -> None:
    before = set(_pods(engine))
    r = engine.crictl("run", "--no-pull", str(_ctr_config(tmp_path, "docker.io/library/nosuch:1", "true", "x")),
                      str(pod_config(tmp_path)), check=False)
    assert r.returncode == 1 and "was removed" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert set(_pods(engine)) == before


def test_a_container_exiting_by_itself(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """ContainerStatus records the exit (state, code, finish time, reason); on ours GetContainerEvents
    sends CONTAINER_STOPPED_EVENT for it (containerd 1.6 predates that RPC)."""
    stream = _EventStream(engine)
    podcfg = pod_config(tmp_path)
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()
    try:
        engine.crictl("pull", busybox)
        done = engine.crictl("create", pod, str(_ctr_config(tmp_path, busybox, "exit 0", "done")),
                             str(podcfg)).stdout.strip()
        cid = engine.crictl("create", pod, str(_ctr_config(tmp_path, busybox, "sleep 1; exit 3", "fails")),
                            str(podcfg)).stdout.strip()
        engine.crictl("start", done)
        engine.crictl("start", cid)
        wait_for(lambda: _state(engine, cid)["state"] == "CONTAINER_EXITED", 30, "the container's own exit")
        st = _state(engine, cid)
        assert (st["exitCode"], st["reason"]) == (3, "Error"), st
        assert st["finishedAt"] > st["startedAt"], st
        wait_for(lambda: _state(engine, done)["state"] == "CONTAINER_EXITED", 30, "the other one's exit")
        assert (_state(engine, done)["exitCode"], _state(engine, done)["reason"]) == (0, "Completed")
        # the status stays what it was (not re-read from a task that is gone) across queries and a stop
        engine.crictl("stop", cid)
        assert _state(engine, cid) == st
        if engine.name == "containerd":
            wait_for(lambda: stream.error, 30, "the stream's status")
            assert stream.error == grpc.StatusCode.UNIMPLEMENTED
            return

        def stopped() -> list[pb.ContainerEventResponse] | None:
            evs = [e for e in stream.of(cid) if e.container_event_type == pb.CONTAINER_STOPPED_EVENT]
            return evs or None

        evs = wait_for(stopped, 30, "CONTAINER_STOPPED_EVENT of the container that exited")
        assert len(evs) == 1  # the later StopContainer sent no second one
        statuses = {s.id: s for s in evs[0].containers_statuses}
        assert statuses[cid].state == pb.CONTAINER_EXITED and statuses[cid].exit_code == 3
        assert statuses[cid].reason == "Error"
        kinds = [e.container_event_type for e in stream.of(done)]
        assert kinds == [pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT, pb.CONTAINER_STOPPED_EVENT]
    finally:
        stream.close()
        engine.crictl("rmp", "-f", pod, check=False)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_one_shim_per_pod(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """The pod's infra process and its two containers are children of one shim process, as
    containerd's runc v2 shim groups a pod's containers by their sandbox id."""
    podcfg = pod_config(tmp_path)
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()
    try:
        engine.crictl("pull", busybox)
        cids = [engine.crictl("create", pod, str(_ctr_config(tmp_path, busybox, "sleep 1000", f"c{i}")),
                              str(podcfg)).stdout.strip() for i in range(2)]
        for cid in cids:
            engine.crictl("start", cid)
        pids = [int(engine.crictl_json("inspectp", pod)["info"]["pid"])]
        pids += [int(engine.crictl_json("inspect", cid)["info"]["pid"]) for cid in cids]
        shims = {_ppid(p) for p in pids}
        assert len(shims) == 1, f"{engine.name}: the pod's processes {pids} have parents {shims}"
        shim = shims.pop()
        assert "shim" in Path(f"/proc/{shim}/cmdline").read_bytes().decode(errors="replace"), shim
    finally:
        engine.crictl("rmp", "-f", pod, check=False)


def _forked_at_least_ns(pid: int) -> int:
    """A wall-clock time (ns) no later than ``pid``'s fork: its start time from /proc (clock
    ticks since boot, rounded down) moved from the boot clock to the wall clock."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK") + offset - 1_000_000  # 1 ms for the two clock reads


def test_started_at_is_taken_once_the_task_started(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """ContainerStatus.started_at is stamped after the task started (containerd's StartContainer sets
    StartedAt after task.Start): within the call, after created_at and after the container's process
    was forked (by runc create, before the start); while the call runs the container reads CREATED
    with no start time, then RUNNING, never anything else."""
    podcfg = pod_config(tmp_path)
    pod = engine.crictl("runp", str(podcfg)).stdout.strip()
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    try:
        engine.crictl("pull", busybox)
        cid = engine.crictl("create", pod, str(_ctr_config(tmp_path, busybox, "sleep 1000", "timed")),
                            str(podcfg)).stdout.strip()

        def poll() -> None:
            with grpc.insecure_channel(f"unix:{engine.address}") as ch:
                stub = pb_grpc.RuntimeServiceStub(ch)
                while not stop.is_set():
                    st = stub.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30).status
                    seen.append((st.state, st.started_at))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        wait_for(lambda: seen, 30, "the first ContainerStatus")
        called = time.time_ns()
        code, detail = engine.call("StartContainer", pb.StartContainerRequest(container_id=cid))
        returned = time.time_ns()
        assert code == grpc.StatusCode.OK, detail
        n = len(seen)
        wait_for(lambda: len(seen) > n + 1, 30, "ContainerStatus after the start")
        stop.set()
        poller.join(30)

        code, resp = engine.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid, verbose=True))
        assert code == grpc.StatusCode.OK, resp
        st = resp.status
        assert st.state == pb.CONTAINER_RUNNING
        assert called <= st.started_at <= returned, (called, st.started_at, returned)
        assert st.started_at >= st.created_at
        pid = int(json.loads(resp.info["info"])["pid"])
        assert st.started_at >= _forked_at_least_ns(pid), f"{engine.name}: started_at before its process was forked"
        states = [s for s, _ in seen]
        first_running = states.index(pb.CONTAINER_RUNNING)
        assert set(states[:first_running]) == {pb.CONTAINER_CREATED}, states
        assert set(states[first_running:]) == {pb.CONTAINER_RUNNING}, states
        assert all(at == 0 for s, at in seen if s == pb.CONTAINER_CREATED), seen
        assert {at for s, at in seen if s == pb.CONTAINER_RUNNING} == {st.started_at}, seen
    finally:
        stop.set()
        engine.crictl("rmp", "-f", pod, check=False)


def _process_status(engine: Engine, pod: str) -> str:
    code, resp = engine.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
    assert code == grpc.StatusCode.OK, resp
    return str(json.loads(resp.info["info"])["processStatus"])


def test_pod_info_process_status_is_the_tasks(engine: Engine, tmp_path: Path) -> None:
    """PodSandboxStatus' verbose ``info.processStatus`` is the infra task's own status, as
    containerd's CRI asks the task: running, paused (``ctr tasks pause``), running again, and
    "deleted" once StopPodSandbox removed the task."""
    pod = engine.crictl("runp", str(pod_config(tmp_path))).stdout.strip()
    try:
        assert _process_status(engine, pod) == "running"
        engine.ctr("tasks", "pause", pod)
        try:
            assert _process_status(engine, pod) == "paused"
        finally:
            engine.ctr("tasks", "resume", pod)
        assert _process_status(engine, pod) == "running"
        engine.crictl("stopp", pod)
        assert _process_status(engine, pod) == "deleted"
    finally:
        engine.crictl("rmp", "-f", pod, check=False)


def test_a_paused_pod_stays_ready_and_stops(engine: Engine, tmp_path: Path) -> None:
    """A pod whose infra task is paused (``ctr tasks pause``) is still SANDBOX_READY in
    PodSandboxStatus and ListPodSandbox, as containerd's CRI says (its pod state is its own, set at
    the start and dropped at the infra process's exit or a stop, not the task's status); ours said
    NOTREADY.  StopPodSandbox of the paused pod ends it (no hang), then the pod is NOTREADY and
    RemovePodSandbox removes it."""
    pod = engine.crictl("runp", str(pod_config(tmp_path))).stdout.strip()
    try:
        engine.ctr("tasks", "pause", pod)
        assert _process_status(engine, pod) == "paused"
        code, resp = engine.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=pod))
        assert code == grpc.StatusCode.OK, resp
        assert resp.status.state == pb.SANDBOX_READY
        code, listed = engine.call("ListPodSandbox", pb.ListPodSandboxRequest())
        assert code == grpc.StatusCode.OK, listed
        assert [p.state for p in listed.items if p.id == pod] == [pb.SANDBOX_READY]
        assert pod in engine.crictl("pods", "-q", "--state", "ready").stdout.split()

        started = time.monotonic()
        code, resp = engine.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        assert code == grpc.StatusCode.OK, resp
        assert time.monotonic() - started < 60
        assert engine.crictl_json("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY"
        assert _process_status(engine, pod) == "deleted"
        code, resp = engine.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
        assert code == grpc.StatusCode.OK, resp
        assert pod not in _pods(engine)
        assert pod not in engine.ctr("containers", "ls", "-q").split()
    finally:
        engine.ctr("tasks", "resume", pod, check=False)
        engine.crictl("rmp", "-f", pod, check=False)


def test_pod_info_process_status_after_the_infra_process_died(engine: Engine, tmp_path: Path) -> None:
    """An infra process that died: the pod is NOTREADY and its processStatus "deleted" (containerd's
    CRI deletes the task at the exit; ours keeps it until StopPodSandbox but says the same)."""
    pod = engine.crictl("runp", str(pod_config(tmp_path))).stdout.strip()
    try:
        pid = int(engine.crictl_json("inspectp", pod)["info"]["pid"])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: engine.crictl_json("inspectp", pod)["status"]["state"] == "SANDBOX_NOTREADY", 30,
                 "the pod NOTREADY after its infra process died")
        wait_for(lambda: _process_status(engine, pod) == "deleted", 30, "processStatus deleted")
        engine.crictl("stopp", pod)
        assert _process_status(engine, pod) == "deleted"
    finally:
        engine.crictl("rmp", "-f", pod, check=False)


def test_container_info_removing_while_removed(ours: Engine, busybox: str, tmp_path: Path) -> None:
    """Verbose ContainerStatus says ``removing`` while a RemoveContainer runs (its task stopped, its
    snapshot going: many files make that long enough to see), as containerd's Status.Removing; on
    ours only: containerd's snapshot goes later, in its garbage collection."""
    podcfg = pod_config(tmp_path)
    pod = ours.crictl("runp", str(podcfg)).stdout.strip()
    try:
        ours.crictl("pull", busybox)
        script = "mkdir /many && cd /many && seq 1 30000 | xargs touch && touch /done && sleep 1000"
        cid = ours.crictl("create", pod, str(_ctr_config(tmp_path, busybox, script, "many")),
                          str(podcfg)).stdout.strip()
        ours.crictl("start", cid)
        wait_for(lambda: ours.crictl("exec", "-s", cid, "ls", "/done", check=False).returncode == 0, 120,
                 "the container's files")
        assert json.loads(ours.call("ContainerStatus", pb.ContainerStatusRequest(
            container_id=cid, verbose=True))[1].info["info"])["removing"] is False
        result: list[Any] = []
        remover = threading.Thread(target=lambda: result.append(
            ours.call("RemoveContainer", pb.RemoveContainerRequest(container_id=cid))), daemon=True)
        remover.start()
        seen: set[bool] = set()
        gone: grpc.StatusCode | None = None
        with grpc.insecure_channel(f"unix:{ours.address}") as ch:
            stub = pb_grpc.RuntimeServiceStub(ch)
            while gone is None:
                try:
                    resp = stub.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True), timeout=30)
                except grpc.RpcError as exc:
                    gone = exc.code()
                else:
                    seen.add(json.loads(resp.info["info"])["removing"])
        assert gone == grpc.StatusCode.NOT_FOUND
        remover.join(60)
        assert result and result[0][0] == grpc.StatusCode.OK, result
        assert True in seen, seen
    finally:
        ours.crictl("rmp", "-f", pod, check=False)
