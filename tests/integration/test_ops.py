"""Operating the daemon (issue 14): debug socket, SIGUSR1 dumps, metrics, ``ctr install``.

Real tools throughout: ``ctr pprof`` against the debug socket, ``go tool pprof`` (Debian's
golang-go) on the profiles, ``promtool check metrics`` and a real Prometheus server
(Debian's prometheus) scraping ``/v1/metrics`` on 127.0.0.1.  ``make install`` installs both
packages, so a missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import images as I
from tests.fixtures.procs import wait_for

from .daemon import Daemon, running_daemon

pytestmark = pytest.mark.root


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: `make install` installs Debian's {package}", pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _debug_sock(d: Daemon) -> str:
    return str(d.state / "debug.sock")


def _http_unix(path: str, raw: bytes, timeout: float = 10) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _get(path: str, target: str) -> tuple[int, bytes]:
    resp = _http_unix(path, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _go_pprof_top(profile: Path) -> str:
    go = _require("go", "golang-go")
    env = {**os.environ, "HOME": str(profile.parent), "GOCACHE": str(profile.parent / ".gocache")}
    r = subprocess.run([go, "tool", "pprof", "-top", str(profile)], capture_output=True, text=True, timeout=120,
                       env=env, cwd=profile.parent)
    assert r.returncode == 0, f"go tool pprof failed on {profile}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@contextlib.contextmanager
def _daemon_with(config: str) -> Iterator[Daemon]:
    with running_daemon(config) as d:
        yield d


def test_sigusr1_dumps_stacks_and_the_daemon_goes_on(daemon: Daemon) -> None:
    before = set(daemon.state.glob("pycontainerd.*.stacks.log"))
    os.kill(daemon.pid, signal.SIGUSR1)
    dumps = wait_for(lambda: set(daemon.state.glob("pycontainerd.*.stacks.log")) - before, 10,
                     "the SIGUSR1 stack dump file")
    (dump,) = dumps
    text = dump.read_text()
    assert "thread 'MainThread" in text
    assert "pycontainerd.daemon.server.Daemon.serve_forever" in text  # the main task, named by function
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert daemon.proc is not None and daemon.proc.poll() is None, "SIGUSR1 killed the daemon"
    daemon.ctr("version")
    wait_for(lambda: "=== END stack dump ===" in daemon.log.read_text(), 10, "the dump in the log")
    # and again: the handler stays installed
    os.kill(daemon.pid, signal.SIGUSR1)
    wait_for(lambda: len(set(daemon.state.glob("pycontainerd.*.stacks.log")) - before) == 2, 10, "a second dump")
    assert daemon.proc.poll() is None
    daemon.ctr("version")


def test_startup_log_names_version_config_roots_and_unloaded_sections() -> None:
    cfg = 'version = 2\n[plugins."io.containerd.nri.v1.nri"]\n  disable = false\n' \
          '[plugins."io.containerd.snapshotter.v1.zfs"]\n  root_path = "/nowhere"\n'
    with _daemon_with(cfg) as d:
        log = d.log.read_text()
        assert "starting pycontainerd version" in log
        assert f"config file: {d.config}" in log
        assert f"root: {d.root}" in log and f"state: {d.state}" in log
        assert "configures plugin io.containerd.nri.v1.nri, which this daemon does not load" in log
        assert "configures plugin io.containerd.snapshotter.v1.zfs, which this daemon does not load" in log


def test_ctr_pprof_goroutines_lists_threads_and_tasks(daemon: Daemon) -> None:
    sock = _debug_sock(daemon)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    r = subprocess.run(["ctr", "pprof", "--debug-socket", sock, "goroutines"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "thread 'MainThread" in out
    assert "task 'Task-1'" in out
    assert "pycontainerd.daemon.server.Daemon.serve_forever" in out
    assert "meta-write" in out or "meta-read" in out  # the metadata threads, by name
    # debug=1: identical stacks counted together, still text
    status, body = _get(sock, "/debug/pprof/goroutine?debug=1")
    assert status == 200 and b" @ tasks: " in body
    # without debug: a gzipped profile go tool pprof reads
    status, body = _get(sock, "/debug/pprof/goroutine")
    assert status == 200 and body[:2] == b"\x1f\x8b"


def test_pprof_heap_and_profile_open_in_go_tool_pprof(daemon: Daemon, tmp_path: Path) -> None:
    _require("go", "golang-go")
    sock = _debug_sock(daemon)

    def ctr_pprof(*args: str) -> bytes:
        r = subprocess.run(["ctr", "pprof", "--debug-socket", sock, *args], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout

    first = ctr_pprof("heap")  # starts tracemalloc: an (almost) empty profile, still valid
    (tmp_path / "heap0.pb.gz").write_bytes(first)
    _go_pprof_top(tmp_path / "heap0.pb.gz")
    for i in range(5):
        daemon.ctr("namespaces", "create", f"heap{i}")
        daemon.ctr("plugins", "ls")
    heap = tmp_path / "heap.pb.gz"
    heap.write_bytes(ctr_pprof("heap"))
    top = _go_pprof_top(heap)
    assert "Type: inuse_space" in top
    assert "pycontainerd." in top, top

    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            daemon.ctr("plugins", "ls", check=False)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        t0 = time.monotonic()
        data = ctr_pprof("profile", "--seconds", "2s")  # ctr 1.6 takes a duration
        took = time.monotonic() - t0
    finally:
        stop.set()
        worker.join(60)
    assert 1.9 <= took < 30
    prof = tmp_path / "cpu.pb.gz"
    prof.write_bytes(data)
    top = _go_pprof_top(prof)
    assert "Type: cpu" in top and "Duration: 2s" in top
    assert "pycontainerd." in top, top

    # the person-readable forms
    status, body = _get(sock, "/debug/pprof/heap?debug=1")
    assert status == 200 and b"bytes in" in body
    status, body = _get(sock, "/debug/pprof/profile?seconds=0.3&debug=1")
    assert status == 200 and b"CPU profile" in body
    # what Python cannot give: a clear 501
    for name in ("block", "threadcreate", "trace"):
        r = subprocess.run(["ctr", "pprof", "--debug-socket", sock, name], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "501" in r.stderr, (name, r.stderr)
        status, body = _get(sock, f"/debug/pprof/{name}")
        assert status == 501 and b"not available in pycontainerd" in body


def test_debug_vars(daemon: Daemon) -> None:
    status, body = _get(_debug_sock(daemon), "/debug/vars")
    assert status == 200
    v = json.loads(body)
    for key in ("uptime_seconds", "tasks", "shims", "open_fds", "db_size_bytes", "event_subscribers"):
        assert key in v, key
    assert v["open_fds"] > 0 and v["db_size_bytes"] > 0 and v["tasks"] == 0


def test_debug_socket_refuses_other_users_and_bad_requests(daemon: Daemon) -> None:
    sock = _debug_sock(daemon)
    # let `nobody` reach the socket itself (the test's temp dir is 0700): the socket's own mode must stop it
    os.chmod(daemon.base, 0o711)
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n  s.connect(sys.argv[1])\nexcept PermissionError:\n  print('denied')\nelse:\n  print('connected')\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, sock], user=65534, group=65534, extra_groups=[],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "denied", (r.stdout, r.stderr)

    def status_of(raw: bytes) -> int:
        resp = _http_unix(sock, raw)
        return int(resp.split(b" ", 2)[1]) if resp else 0

    assert status_of(b"GET /debug/vars HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 10) + b"\r\n\r\n") == 431
    assert status_of(b"\x00\x01\x02garbage\r\n\r\n") == 400
    assert status_of(b"GET /debug/vars SPDY/9\r\n\r\n") == 505
    assert status_of(b"GET /debug/vars HTTP/1.1\r\nno colon here\r\n\r\n") == 400
    assert status_of(b"POST /debug/vars HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello") == 413
    assert status_of(b"DELETE /debug/vars HTTP/1.1\r\n\r\n") == 405
    assert status_of(b"GET /nope HTTP/1.1\r\n\r\n") == 404
    assert status_of(b"GET /debug/pprof/profile?seconds=-1 HTTP/1.1\r\n\r\n") == 400
    # a client that opens connections and never finishes its request holds nothing up
    idle = []
    for _ in range(8):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.sendall(b"GET /debug/vars HTTP/1.1\r\n")
        idle.append(s)
    try:
        status, _ = _get(sock, "/debug/vars")
        assert status == 200
        daemon.ctr("version")
    finally:
        for s in idle:
            s.close()
    assert daemon.proc is not None and daemon.proc.poll() is None
    daemon.ctr("version")


def _metrics_port(d: Daemon) -> int:
    text = d.config.read_text()
    return int(text.split('address = "127.0.0.1:', 1)[1].split('"', 1)[0])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return str(r.read().decode())


def _start_prometheus(tmp: Path, target_port: int) -> tuple[subprocess.Popen[bytes], int]:
    prom = _require("prometheus", "prometheus")
    port = _free_port()
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: pycontainerd\n    metrics_path: /v1/metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([prom, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc, port


def _prom_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())
    except OSError:
        return []
    result: list[dict[str, object]] = data.get("data", {}).get("result", [])
    return result


def _cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()  # unified; else legacy or hybrid (v1 metrics)


# containerd's cgroup collector names (v2 host / v1 host), CPU in seconds (see metrics/registry.py)
MEMORY = "container_memory_usage_bytes" if _cgroup_v2() else "container_memory_usage_usage_bytes"
CPU = "container_cpu_usage_seconds" if _cgroup_v2() else "container_cpu_total_seconds"


def test_metrics_promtool_and_a_real_prometheus(tmp_path: Path, busybox_archive: Path) -> None:
    promtool = _require("promtool", "prometheus")
    port = _free_port()
    cfg = f'version = 2\n[metrics]\n  address = "127.0.0.1:{port}"\n  grpc_histogram = true\n'
    with _daemon_with(cfg) as d:
        d.ctr("images", "import", str(busybox_archive))
        d.ctr("run", "-d", "docker.io/library/busybox:latest", "mem1", "sh", "-c", "sleep 600")
        d.ctr("containers", "info", "no-such-container", check=False)  # a NotFound for the code label
        prom: subprocess.Popen[bytes] | None = None
        try:
            text = _scrape(port)
            r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}\n{r.stderr}"
            assert MEMORY + '{container_id="mem1",namespace="default"}' in text
            assert 'container_pids_current{container_id="mem1",namespace="default"}' in text
            assert CPU + '{container_id="mem1",namespace="default"}' in text
            assert ('grpc_server_handled_total{grpc_code="NotFound",grpc_method="Get",'
                    'grpc_service="containerd.services.containers.v1.Containers",grpc_type="unary"} 1.0') in text
            assert "grpc_server_handling_seconds_bucket{" in text
            assert "pycontainerd_shims 1.0" in text
            assert "pycontainerd_event_loop_lag_seconds" in text
            assert "pycontainerd_diff_applied_bytes_total" in text
            # content was ingested by the import, layers applied by the unpack
            ingested = float(text.split("\npycontainerd_content_ingested_bytes_total ", 1)[1].split()[0])
            assert ingested > 0
            prom, prom_port = _start_prometheus(tmp_path, port)
            res = wait_for(lambda: _prom_query(prom_port, MEMORY + '{container_id="mem1"}'),
                           60, "Prometheus to scrape the container's memory")
            value = float(res[0]["value"][1])  # type: ignore[index]
            assert value > 0
            assert res[0]["metric"]["namespace"] == "default"  # type: ignore[index]
            up = _prom_query(prom_port, 'up{job="pycontainerd"}')
            assert up and float(up[0]["value"][1]) == 1.0  # type: ignore[index]
        finally:
            if prom is not None:
                prom.terminate()
                try:
                    prom.wait(20)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait(10)
            d.ctr("tasks", "kill", "-s", "SIGKILL", "mem1", check=False)


def test_scrape_with_100_tasks_is_cheap(tmp_path: Path, busybox_archive: Path) -> None:
    """Scraping reads every task's cgroup in a worker thread: a few ms, the loop stays free."""
    port = _free_port()
    with _daemon_with(f'version = 2\n[metrics]\n  address = "127.0.0.1:{port}"\n') as d:
        d.ctr("images", "import", str(busybox_archive))
        n = int(os.environ.get("PYCD_SCRAPE_TASKS", "100"))
        for batch in range(0, n, 10):  # ten at a time: the machine is shared
            procs = [subprocess.Popen(["ctr", "-a", d.address, "run", "-d", "docker.io/library/busybox:latest",
                                       f"s{i}", "sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for i in range(batch, min(n, batch + 10))]
            for p in procs:
                assert p.wait(300) == 0, p.stderr.read() if p.stderr else ""
        text = _scrape(port)
        assert text.count(MEMORY + "{") == n
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            _scrape(port)
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"scrape with {n} tasks: best {best * 1000:.1f} ms, median {sorted(times)[2] * 1000:.1f} ms")
        assert best < 0.1, times
        lag = float(_scrape(port).split("\npycontainerd_event_loop_lag_seconds ", 1)[1].split()[0])
        assert lag < 0.25


def test_ctr_install_into_opt_and_the_daemon_finds_it(tmp_path: Path, busybox_archive: Path) -> None:
    opt = tmp_path / "opt"
    marker = tmp_path / "myrunc.calls"
    shim_marker = tmp_path / "shim.calls"
    shim_script = f'#!/bin/sh\necho "$@" >> {shim_marker}\nexec /usr/bin/containerd-shim-runc-v2 "$@"\n'
    cfg = f'version = 2\n[plugins."io.containerd.internal.v1.opt"]\n  path = "{opt}"\n'
    with _daemon_with(cfg) as d:
        r = d.ctr("plugins", "ls", "-d", "id==opt")
        assert "io.containerd.internal.v1" in r.stdout and f"path      {opt}" in r.stdout
        src = tmp_path / "pkg"
        img = I.build_image(src, [[I.d("bin"), I.f("bin/hello", "#!/bin/sh\necho hello from opt\n", 0o755),
                                   I.f("bin/myrunc", f'#!/bin/sh\necho "$@" >> {marker}\nexec runc "$@"\n', 0o755),
                                   I.f("bin/containerd-shim-opttest-v2", shim_script, 0o755),
                                   I.d("lib"), I.f("lib/libhello.so", "not really\n")]],
                            name="example.com/tools/hello:1")
        archive = I.export_archive(img, tmp_path / "hello.tar")
        d.ctr("images", "import", "--no-unpack", str(archive))
        d.ctr("install", "example.com/tools/hello:1")
        hello = opt / "bin" / "hello"
        assert hello.is_file()
        out = subprocess.run([str(hello)], capture_output=True, text=True, timeout=10)
        assert out.stdout == "hello from opt\n"
        assert not (opt / "lib" / "libhello.so").exists()  # only with --libs
        d.ctr("install", "--libs", "--replace", "example.com/tools/hello:1")
        assert (opt / "lib" / "libhello.so").is_file()
        # the daemon (and its shims) find what was installed there: a runtime by its bare name
        d.ctr("images", "import", str(busybox_archive))
        r = d.ctr("run", "--rm", "--runc-binary", "myrunc", "docker.io/library/busybox:latest", "via-opt",
                  "echo", "ran through myrunc")
        assert "ran through myrunc" in r.stdout
        assert marker.exists() and "create" in marker.read_text()
        # and a shim installed there: io.containerd.opttest.v2 resolves to containerd-shim-opttest-v2 on PATH
        if not Path("/usr/bin/containerd-shim-runc-v2").exists():
            pytest.fail("/usr/bin/containerd-shim-runc-v2 is missing: `make install` installs Debian's containerd")
        r = d.ctr("run", "--rm", "--runtime", "io.containerd.opttest.v2", "docker.io/library/busybox:latest",
                  "via-shim", "echo", "ran through the installed shim")
        assert "ran through the installed shim" in r.stdout
        assert shim_marker.exists() and "start" in shim_marker.read_text()


def test_opt_path_must_be_absolute(tmp_path: Path) -> None:
    cfg = 'version = 2\nrequired_plugins = ["io.containerd.internal.v1.opt"]\n' \
          '[plugins."io.containerd.internal.v1.opt"]\n  path = "relative/opt"\n'
    d = Daemon(tmp_path, cfg)
    try:
        r = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    finally:
        d.cleanup()
    assert r.returncode != 0
    assert 'plugins."io.containerd.internal.v1.opt".path: \'relative/opt\' must be an absolute path' in r.stderr


def test_bad_metrics_address_is_refused_naming_the_key(tmp_path: Path) -> None:
    d = Daemon(tmp_path, 'version = 2\n[metrics]\n  address = "localhost"\n')
    try:
        r = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    finally:
        d.cleanup()
    assert r.returncode != 0 and "metrics.address" in r.stderr, r.stderr


def test_pyctr_pprof_metrics_info(tmp_path: Path, busybox_archive: Path) -> None:
    port = _free_port()
    with _daemon_with(f'version = 2\n[metrics]\n  address = "127.0.0.1:{port}"\n') as d:
        env = {**os.environ, "PYCONTAINERD_DEBUG_SOCKET": _debug_sock(d)}

        def pyctr(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(Path(sys.executable).parent / "pyctr"), "-a", d.address, *args],
                                  capture_output=True, text=True, timeout=120, env=env)

        d.ctr("images", "import", str(busybox_archive))
        d.ctr("run", "-d", "docker.io/library/busybox:latest", "info1", "sleep", "600")
        try:
            r = pyctr("pprof", "goroutines")
            assert r.returncode == 0 and "thread 'MainThread" in r.stdout, r.stderr
            r = pyctr("pprof", "profile", "--seconds", "1", "-o", str(tmp_path / "cpu.pb.gz"))
            assert r.returncode == 0, r.stderr
            assert "Type: cpu" in _go_pprof_top(tmp_path / "cpu.pb.gz")
            r = pyctr("pprof", "heap", "-o", str(tmp_path / "heap.pb.gz"))
            assert r.returncode == 0, r.stderr
            _go_pprof_top(tmp_path / "heap.pb.gz")
            r = pyctr("metrics")  # the endpoint found through the debug socket
            assert r.returncode == 0, r.stderr
            assert "CONTAINERS (1)" in r.stdout and "info1" in r.stdout and "shims               1" in r.stdout
            r = pyctr("info")
            assert r.returncode == 0, r.stderr
            out = r.stdout
            assert f"Config:   {d.config}" in out and f"Root:     {d.root}" in out
            assert "Shims:    1 running for 1 tasks" in out
            assert "content " in out and "snapshots (overlayfs)" in out
            assert "io.containerd.internal.v1       opt" in out
        finally:
            d.ctr("tasks", "kill", "-s", "SIGKILL", "info1", check=False)


def test_debug_format_json_and_uid_gid(tmp_path: Path) -> None:
    with _daemon_with('version = 2\n[debug]\n  format = "json"\n  gid = 65534\n') as d:
        lines = [ln for ln in d.log.read_text().splitlines() if ln.startswith("{")]
        assert lines, d.log.read_text()[:2000]
        first = json.loads(lines[0])
        assert first["level"] == "info" and first["msg"].startswith("starting pycontainerd version")
        st = os.stat(_debug_sock(d))
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534 and st.st_uid == 0


def test_gc_and_pull_metrics(busybox_archive: Path) -> None:
    port = _free_port()
    with _daemon_with(f'version = 2\n[metrics]\n  address = "127.0.0.1:{port}"\n') as d:
        d.ctr("images", "import", str(busybox_archive))
        text = _scrape(port)
        ingested = float(text.split("\npycontainerd_content_ingested_bytes_total ", 1)[1].split()[0])
        assert ingested >= busybox_archive.stat().st_size * 0.5
        assert "pycontainerd_diff_apply_seconds_count 1.0" in text
        d.ctr("images", "rm", "--sync", "docker.io/library/busybox:latest")

        def freed() -> float:
            t = _scrape(port)
            return float(t.split("\npycontainerd_gc_freed_bytes_total ", 1)[1].split()[0])

        assert wait_for(freed, 30, "the GC to report freed bytes") >= ingested * 0.5
        assert 'pycontainerd_gc_removed_total{kind="blobs"}' in _scrape(port)
