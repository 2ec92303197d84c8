"""Issue 2: the real ctr (and pyctr) against our daemon — version, plugins, namespaces, events, process."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from tests.fixtures.procs import wait_for

from .daemon import BIN, CTR, Daemon

pytestmark = pytest.mark.root


def test_ctr_version_reports_our_server(daemon: Daemon) -> None:
    r = daemon.ctr("version")
    assert "Server:" in r.stdout
    server = r.stdout.split("Server:", 1)[1]
    assert re.search(r"Version:\s+0\.1\.0", server)
    assert re.search(r"UUID: [0-9a-f-]{36}", server)


def test_uuid_is_stable_across_restarts(daemon: Daemon) -> None:
    first = re.search(r"UUID: (\S+)", daemon.ctr("version").stdout)
    daemon.restart()
    second = re.search(r"UUID: (\S+)", daemon.ctr("version").stdout)
    assert first and second and first.group(1) == second.group(1)


def test_ctr_plugins_ls_shows_statuses(daemon: Daemon) -> None:
    r = daemon.ctr("plugins", "ls")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    rows = {(ln.split()[0], ln.split()[1]): ln.split()[-1] for ln in lines[1:]}
    assert rows[("io.containerd.grpc.v1", "namespaces")] == "ok"
    assert rows[("io.containerd.grpc.v1", "introspection")] == "ok"
    assert rows[("io.containerd.event.v1", "exchange")] == "ok"
    # a plugin that cannot run here is listed as skipped, and the daemon carries on
    assert rows[("io.containerd.snapshotter.v1", "btrfs")] == "skip"
    detail = daemon.ctr("plugins", "ls", "-d", "id==btrfs").stdout
    assert "must be a btrfs filesystem" in detail
    # filters go through containerd's filter syntax
    r = daemon.ctr("plugins", "ls", "type==io.containerd.grpc.v1,id==version")
    assert len(r.stdout.splitlines()) == 2


def test_ctr_namespaces_lifecycle(daemon: Daemon) -> None:
    daemon.ctr("namespaces", "create", "x", "team=a")
    r = daemon.ctr("namespaces", "ls")
    assert re.search(r"^x\s+team=a\s*$", r.stdout, re.M)
    daemon.ctr("namespaces", "label", "x", "a=b")
    assert re.search(r"^x\s+a=b,team=a\s*$", daemon.ctr("namespaces", "ls").stdout, re.M)
    daemon.ctr("namespaces", "label", "x", "team=")
    assert re.search(r"^x\s+a=b\s*$", daemon.ctr("namespaces", "ls").stdout, re.M)
    r = daemon.ctr("namespaces", "create", "x", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    daemon.ctr("namespaces", "rm", "x")
    assert not re.search(r"^x\s", daemon.ctr("namespaces", "ls").stdout, re.M)


def test_invalid_namespace_name_is_invalid_argument(daemon: Daemon) -> None:
    r = daemon.ctr("namespaces", "create", "bad/name", check=False)
    assert r.returncode != 0
    assert "invalid argument" in r.stderr
    r = daemon.ctr("namespaces", "label", "bad..ns", "a=b", check=False)
    assert r.returncode != 0 and "invalid argument" in r.stderr
    r = daemon.pyctr("namespaces", "create", "a..b", check=False)
    assert r.returncode == 1 and "invalid argument" in r.stderr and "must match" in r.stderr


def test_ctr_events_receives_namespace_events(daemon: Daemon) -> None:
    proc = subprocess.Popen([CTR, "-a", daemon.address, "events"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def seen(text: str) -> bool:
        return any(text in ln for ln in list(lines))

    probes = itertools.count()

    def subscribed() -> bool:
        if seen("/namespaces/create"):
            return True
        daemon.ctr("namespaces", "create", f"ev{next(probes)}")
        return False

    try:
        # the subscription is live once one of our creates shows up: create until one does
        wait_for(subscribed, 20, "ctr events to receive a /namespaces/create")
        daemon.ctr("namespaces", "label", "ev0", "k=v")
        daemon.ctr("namespaces", "rm", "ev0")
        wait_for(lambda: seen("/namespaces/delete"), 20, "/namespaces/delete from ctr events")
    finally:
        proc.kill()
        proc.wait()
    printed = "".join(lines)
    assert "/namespaces/create" in printed
    assert re.search(r'/namespaces/update \{"name":"ev0","labels":\{"k":"v"\}\}', printed)
    assert re.search(r'/namespaces/delete \{"name":"ev0"\}', printed)


def test_namespaces_survive_kill9(daemon: Daemon) -> None:
    daemon.ctr("namespaces", "create", "keep", "a=1")
    daemon.kill9()
    daemon.start()
    assert re.search(r"^keep\s+a=1\s*$", daemon.ctr("namespaces", "ls").stdout, re.M)


def test_second_daemon_on_same_socket_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    other = Daemon(tmp_path)
    other.address = daemon.address
    r = subprocess.run(other.command(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "already serving" in r.stderr
    # the first daemon still answers
    daemon.ctr("version")


def test_second_daemon_on_same_root_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    cmd = [str(BIN / "pycontainerd"), "--root", str(daemon.root), "--state", str(tmp_path / "s"),
           "--address", str(tmp_path / "x.sock")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "in use by another" in r.stderr


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    import socket

    d = Daemon(tmp_path)
    s = socket.socket(socket.AF_UNIX)
    s.bind(d.address)
    s.close()  # leaves a socket file nobody listens on
    try:
        d.start()
        d.ctr("version")
    finally:
        d.cleanup()


def test_malformed_config_exits_with_message(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('version = 2\n[grpc]\nmax_recv_message_size = "lots"\n')
    r = subprocess.run([str(BIN / "pycontainerd"), "--config", str(cfg), "--root", str(tmp_path / "r"),
                        "--address", str(tmp_path / "s.sock"), "--state", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "max_recv_message_size" in r.stderr
    cfg.write_text("version = 2\n[grpc\n")
    r = subprocess.run([str(BIN / "pycontainerd"), "--config", str(cfg), "config", "dump"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "config.toml" in r.stderr


def test_socket_permissions(daemon: Daemon) -> None:
    assert os.stat(daemon.address).st_mode & 0o777 == 0o660


def test_sigterm_stops_gracefully(daemon: Daemon) -> None:
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.address)


def test_pyctr_against_our_daemon(daemon: Daemon) -> None:
    assert "UUID:" in daemon.pyctr("version").stdout
    out = daemon.pyctr("plugins", "ls").stdout
    assert "io.containerd.grpc.v1" in out and "ok" in out
    daemon.pyctr("namespaces", "create", "py", "a=b")
    assert re.search(r"^py\s+a=b\s*$", daemon.pyctr("namespaces", "ls").stdout, re.M)
    daemon.pyctr("namespaces", "label", "py", "c=d")
    assert re.search(r"^py\s+a=b,c=d\s*$", daemon.ctr("namespaces", "ls").stdout, re.M)
    r = daemon.pyctr("namespaces", "create", "py", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    daemon.pyctr("namespaces", "rm", "py")


def test_pyctr_unreachable_daemon_is_clear(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "pyctr"), "-a", str(tmp_path / "nope.sock"), "--connect-timeout", "1", "version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3  # its own exit code: nothing answers at the address
    assert "cannot reach the daemon" in r.stderr
