"""Unit tests of the operator endpoints' pieces (issue 14): pprof encoding, HTTP parsing, metrics."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from pathlib import Path

import pytest

from pycontainerd import cgroups, errdefs
from pycontainerd.cli.pyctr.metrics import render
from pycontainerd.daemon.ops import parse_metrics_address
from pycontainerd.debug import pprof, stacks
from pycontainerd.debug.http import MAX_HEAD, BadRequest, HTTPServer, Request, Response, parse_head
from pycontainerd.debug.profile import Frame, ProfileBuilder, _varint
from pycontainerd.metrics import cgroupstats
from pycontainerd.rpc.status import AbortError, StatusCode, status_of


# -- a small protobuf reader, enough to check what we wrote ----------------------------------------
def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = _read_varint(buf, pos)
            out.append((field_no, v))
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            out.append((field_no, buf[pos:pos + n]))
            pos += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def test_varint_matches_protobuf() -> None:
    from google.protobuf.internal import encoder

    for v in (0, 1, 127, 128, 300, 1 << 35, (1 << 63) - 1):
        out: list[bytes] = []
        encoder._VarintEncoder()(out.append, v, False)  # type: ignore[attr-defined]
        assert _varint(v) == b"".join(out)
    assert len(_varint(-1)) == 10  # int64 negatives, two's complement


def test_profile_round_trip() -> None:
    b = ProfileBuilder([("samples", "count"), ("cpu", "nanoseconds")], period_type=("cpu", "nanoseconds"),
                       period=10_000_000, duration_ns=2_000_000_000, comments=["hello"])
    leaf = Frame("pkg.mod.leaf", "/src/mod.py", 12, 10)
    root = Frame("pkg.mod.main", "/src/mod.py", 40, 30)
    b.add((leaf, root), [1, 500], {"thread": "MainThread"})
    b.add((leaf, root), [2, 700], {"thread": "MainThread"})  # same stack and labels: summed
    b.add((root,), [1, 100])
    raw = gzip.decompress(b.encode())
    fields = _fields(raw)
    strings = [v.decode() for f, v in fields if f == 6 and isinstance(v, bytes)]
    assert strings[0] == ""
    assert {"samples", "count", "cpu", "nanoseconds", "pkg.mod.leaf", "pkg.mod.main", "/src/mod.py", "thread",
            "MainThread", "hello"} <= set(strings)
    samples = [v for f, v in fields if f == 2]
    assert len(samples) == 2
    first = _fields(samples[0])  # type: ignore[arg-type]
    locs = first[0][1]
    values = first[1][1]
    assert isinstance(locs, bytes) and isinstance(values, bytes)
    assert [x for x in locs] == [1, 2]  # leaf first
    assert _read_varint(values, 0)[0] == 3  # 1 + 2 samples
    functions = [_fields(v) for f, v in fields if f == 5]  # type: ignore[arg-type]
    assert len(functions) == 2
    locations = [_fields(v) for f, v in fields if f == 4]  # type: ignore[arg-type]
    assert len(locations) == 2
    assert dict((f, v) for f, v in fields if f in (10, 12)) == {10: 2_000_000_000, 12: 10_000_000}


def test_goroutine_text_names_threads_and_tasks() -> None:
    started = threading.Event()
    stop = threading.Event()

    def waiter() -> None:
        started.set()
        stop.wait(10)

    t = threading.Thread(target=waiter, name="ops-test-waiter")
    t.start()
    started.wait(5)

    async def main() -> str:
        async def sleeper() -> None:
            await asyncio.sleep(10)

        task = asyncio.create_task(sleeper(), name="ops-test-sleeper")
        await asyncio.sleep(0)
        try:
            return stacks.text(stacks.all_entries(), 2) + "\n====\n" + stacks.text(stacks.all_entries(), 1)
        finally:
            task.cancel()

    try:
        out = asyncio.run(main())
    finally:
        stop.set()
        t.join(5)
    assert "thread 'ops-test-waiter" in out
    assert "task 'ops-test-sleeper' [pending]" in out
    assert "test_ops_units.test_goroutine_text_names_threads_and_tasks.<locals>.main.<locals>.sleeper" in out
    assert "test_ops_units.test_goroutine_text_names_threads_and_tasks.<locals>.waiter" in out
    assert " @ tasks: " in out


def test_cpu_profile_charges_the_busy_thread() -> None:
    stop = threading.Event()

    def busy_loop_for_profile() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=busy_loop_for_profile, name="busy")
    t.start()
    try:
        b, per_thread = pprof.cpu_profile(1.0, interval=0.01)
    finally:
        stop.set()
        t.join(5)
    assert per_thread.get("busy", 0) > 5_000_000, per_thread  # CPU seen (little when the machine is busy)
    text = pprof.cpu_text(b, per_thread, 1.0)
    assert "busy_loop_for_profile" in text


def test_heap_profile_names_functions() -> None:
    started = pprof.heap_start()
    try:
        keep = [bytearray(1000) for _ in range(200)]  # noqa: F841 - live while profiling
        b, rows = pprof.heap_profile()
        assert any("test_heap_profile_names_functions" in f.function for _, _, frames in rows for f in frames)
        assert gzip.decompress(b.encode())
    finally:
        if started:
            pprof.heap_stop()


# -- HTTP ------------------------------------------------------------------------------------------
def test_parse_head() -> None:
    r = parse_head(b"GET /debug/pprof/profile?seconds=2&debug=1 HTTP/1.1\r\nHost: .\r\nUser-Agent: Go\r\n\r\n")
    assert r.method == "GET" and r.path == "/debug/pprof/profile"
    assert r.arg("seconds") == "2" and r.arg("debug") == "1" and r.headers["host"] == "."
    for bad, status in ((b"GET\r\n\r\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 505), (b"get / HTTP/1.1\r\n\r\n", 400),
                        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400), (b"GET nope HTTP/1.1\r\n\r\n", 400),
                        (b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n", 400)):
        with pytest.raises(BadRequest) as info:
            parse_head(bad)
        assert info.value.status == status, bad


def test_http_server_bounds(tmp_path: Path) -> None:
    sock = str(tmp_path / "s.sock")

    async def ok(req: Request) -> Response:
        return Response(200, b"fine")

    async def boom(req: Request) -> Response:
        raise RuntimeError("kaput")

    async def exchange(raw: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(sock)
        writer.write(raw)
        await writer.drain()
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return data

    async def main() -> None:
        server = HTTPServer({"/ok": ok, "/boom": boom}, name="test")
        await server.start_unix(sock)
        try:
            assert (await exchange(b"GET /ok HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
            assert (await exchange(b"HEAD /ok HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
            big = b"GET /ok HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n"
            assert (await exchange(big)).startswith(b"HTTP/1.1 431")
            assert (await exchange(b"GET /boom HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
            assert (await exchange(b"PUT /ok HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
            assert (await exchange(b"GET /missing HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
            assert await exchange(b"GET /ok HTT") == b""  # the client gave up half-way: nothing to answer
            assert (await exchange(b"GET /ok HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
            assert server.rejected == 1 and server.requests == 6
        finally:
            await server.close()

    asyncio.run(main())


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_address() -> None:
    assert parse_metrics_address("127.0.0.1:1338") == ("127.0.0.1", 1338)
    assert parse_metrics_address("[::1]:9000") == ("::1", 9000)
    assert parse_metrics_address(":1338") == ("0.0.0.0", 1338)
    for bad in ("localhost", "127.0.0.1:x", "::1:80", "host:70000"):
        with pytest.raises(errdefs.InvalidArgument, match=r"metrics\.address"):
            parse_metrics_address(bad)


def _go_code(exc: BaseException | None) -> str:
    # how the server reports a finished call to its observers (metrics label the code Go's way)
    if exc is None:
        return StatusCode.OK.go_name
    if isinstance(exc, asyncio.CancelledError):
        return StatusCode.CANCELLED.go_name
    return status_of(exc)[0].go_name


def test_grpc_codes_spelled_like_go() -> None:
    assert _go_code(None) == "OK"
    assert _go_code(errdefs.NotFound("x")) == "NotFound"
    assert _go_code(errdefs.FailedPrecondition("x")) == "FailedPrecondition"
    assert _go_code(AbortError(StatusCode.ALREADY_EXISTS)) == "AlreadyExists"
    assert StatusCode(5).go_name == "NotFound"
    assert _go_code(asyncio.CancelledError()) == "Canceled"
    assert _go_code(ValueError()) == "Unknown"
    assert StatusCode.DEADLINE_EXCEEDED.go_name == "DeadlineExceeded"


def test_cgroupstats_v2_tree(tmp_path: Path) -> None:
    cg = tmp_path / "cg" / "default" / "c1"
    cg.mkdir(parents=True)
    (cg / "memory.current").write_text("4096\n")
    (cg / "memory.max").write_text("max\n")
    (cg / "memory.stat").write_text("anon 1024\nfile 2048\n")
    (cg / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (cg / "pids.current").write_text("3\n")
    (cg / "pids.max").write_text("100\n")
    (cg / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("0::/default/c1\n")
    r = cgroupstats.Reader(cgroups.Mounts(v2=tmp_path / "cg", mode=cgroups.V2))
    r.reader.proc_root = tmp_path / "proc"
    s = r.stats(42)
    assert s is not None
    assert s.memory_usage == 4096 and s.memory_limit == cgroups.UINT64_MAX
    assert s.memory_stat[b"anon"] == 1024 and s.cpu[b"usage_usec"] == 1_500_000
    assert s.pids_current == 3 and s.pids_limit == 100
    assert s.io and s.io[0]["rbytes"] == 10
    (cg / "memory.current").unlink()
    (cg / "cpu.stat").unlink()
    assert r.stats(42) is None  # the cgroup went away: nothing, and the cached path is dropped


def test_pyctr_metrics_table() -> None:
    text = "\n".join([
        "# TYPE container_memory_usage_bytes gauge",
        'container_memory_usage_bytes{container_id="c1",namespace="default"} 1048576',
        "# TYPE container_cpu_usage_seconds gauge",
        'container_cpu_usage_seconds{container_id="c1",namespace="default"} 1.5',
        "# TYPE pycontainerd_shims gauge",
        "pycontainerd_shims 1",
        "# TYPE grpc_server_handled_total counter",
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Get",grpc_service="x.Containers",grpc_type="unary"} 3',
        'grpc_server_handled_total{grpc_code="NotFound",grpc_method="Get",grpc_service="x.Containers",'
        'grpc_type="unary"} 2',
        "",
    ])
    out = render(text)
    assert "default      c1           1.0 MiB" in out
    assert "1.50s" in out
    assert "Containers/Get    5        NotFound=2" in out
    assert "shims               1" in out


def test_lag_probe_measures_a_blocked_loop() -> None:
    from pycontainerd.metrics.registry import DaemonMetrics

    m = DaemonMetrics()

    async def main() -> float:
        m.start_lag_probe(interval=0.05)
        await asyncio.sleep(0.01)
        time.sleep(0.2)  # block the loop, as a blocking call on it would
        await asyncio.sleep(0.15)
        await m.close()
        return float(m.loop_lag_hist._sum.get())

    assert asyncio.run(main()) >= 0.1


def test_config_dump_shows_debug_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pycontainerd.daemon.__main__ import main

    cfg = tmp_path / "config.toml"
    cfg.write_text('version = 2\n[debug]\n  address = "/run/x/debug.sock"\n  level = "debug"\n  format = "json"\n'
                   '[metrics]\n  address = "127.0.0.1:1338"\n  grpc_histogram = true\n'
                   '[plugins."io.containerd.internal.v1.opt"]\n  path = "/opt/x"\n')
    main(["--config", str(cfg), "config", "dump"])
    out = capsys.readouterr().out
    assert '[debug]\naddress = "/run/x/debug.sock"' in out and 'format = "json"' in out
    assert '[metrics]\naddress = "127.0.0.1:1338"\ngrpc_histogram = true' in out
    assert 'path = "/opt/x"' in out


def test_sigusr1_dump_while_the_loop_is_blocked(tmp_path: Path) -> None:
    """The dump must come out of a stuck daemon: a blocking call on the loop, not just an idle loop."""
    import os
    import signal
    from types import SimpleNamespace

    from pycontainerd.daemon.ops import OpsServers

    cfg = SimpleNamespace(metrics=SimpleNamespace(address=""), state=str(tmp_path), debug=SimpleNamespace())
    ops = OpsServers(SimpleNamespace(config=cfg))
    seen: list[list[Path]] = []

    def stuck_call_on_the_loop() -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.3)  # blocks the loop; the handler runs within it
        seen.append(sorted(tmp_path.glob("pycontainerd.*.stacks.log")))

    async def main() -> None:
        ops.install_signal_handlers()
        try:
            asyncio.get_running_loop().call_soon(stuck_call_on_the_loop)
            await asyncio.sleep(0.5)
        finally:
            await ops.close()

    before = signal.getsignal(signal.SIGUSR1)
    asyncio.run(main())
    assert signal.getsignal(signal.SIGUSR1) == before  # put back
    assert seen and len(seen[0]) == 1, "no dump while the loop was blocked"
    text = seen[0][0].read_text()
    assert "stuck_call_on_the_loop" in text  # the dump shows what the loop is stuck in


def test_debug_socket_answers_while_the_main_loop_is_blocked(tmp_path: Path) -> None:
    import socket as socketmod
    from types import SimpleNamespace

    from pycontainerd.debug.server import DebugServer

    sock = str(tmp_path / "debug.sock")
    daemon = SimpleNamespace(config=SimpleNamespace(source="", root="/r", state="/s"), address="/a",
                             plugins=SimpleNamespace(get=lambda *a: (_ for _ in ()).throw(errdefs.NotFound("x"))),
                             db=SimpleNamespace(path=tmp_path / "none"), exchange=SimpleNamespace(subscriber_count=0))
    server = DebugServer(daemon, sock)
    answers: list[tuple[float, bytes]] = []

    def ask() -> None:
        with socketmod.socket(socketmod.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(b"GET /debug/pprof/goroutine?debug=2 HTTP/1.1\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        answers.append((time.monotonic(), data))

    def blocking_call_on_the_main_loop() -> None:
        asker = threading.Thread(target=ask)
        asker.start()
        asker.join(5)
        time.sleep(0.05)

    async def main() -> float:
        await server.start()
        try:
            async def ticker() -> None:
                await asyncio.sleep(30)

            t = asyncio.create_task(ticker(), name="main-loop-ticker")
            blocking_call_on_the_main_loop()  # the loop is stuck in here while the socket is asked
            unblocked = time.monotonic()
            t.cancel()
            return unblocked
        finally:
            await server.close()

    unblocked = asyncio.run(main())
    assert answers, "no answer while the main loop was blocked"
    at, data = answers[0]
    assert at < unblocked
    assert data.startswith(b"HTTP/1.1 200")
    assert b"blocking_call_on_the_main_loop" in data and b"task 'main-loop-ticker'" in data
    assert not Path(sock).exists()
