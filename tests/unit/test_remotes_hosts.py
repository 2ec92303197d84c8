"""hosts.toml resolution and CRI mirrors → ordered endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycontainerd import errdefs
from pycontainerd.remotes import hosts


def test_default_without_config() -> None:
    eps = hosts.configure("docker.io")
    assert [e.base_url for e in eps] == ["https://registry-1.docker.io/v2"]
    assert eps[0].capabilities == hosts.ALL_CAPABILITIES
    eps = hosts.configure("localhost:5000", plain_http=True)
    assert [e.base_url for e in eps] == ["http://localhost:5000/v2"]


def test_hosts_toml_order_capabilities_and_options(tmp_path: Path) -> None:
    d = tmp_path / "docker.io"
    d.mkdir()
    (d / "hosts.toml").write_text('''
server = "https://registry-1.docker.io"

[host."https://mirror-b.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "certs/ca.pem"
  skip_verify = true
  header = { x-a = "1", x-b = ["2", "3"] }

[host."http://mirror-a.example.com:8080/base"]
  capabilities = ["pull"]
  client = [["/c.cert", "/c.key"]]

[host."https://weird.example.com/custom/api"]
  override_path = true
''')
    eps = hosts.configure("docker.io", hosts_dir=str(tmp_path))
    assert [e.base_url for e in eps] == [
        "https://mirror-b.example.com/v2",
        "http://mirror-a.example.com:8080/base/v2",
        "https://weird.example.com/custom/api",
        "https://registry-1.docker.io/v2",
    ]
    b, a, w, up = eps
    assert b.capabilities == {"pull", "resolve"}
    assert b.skip_verify is True
    assert b.ca == (str(d / "certs/ca.pem"),)
    assert b.headers() == {"x-a": "1", "x-b": "2, 3"}
    assert a.capabilities == {"pull"}
    assert a.client == (("/c.cert", "/c.key"),)
    assert w.capabilities == hosts.ALL_CAPABILITIES
    assert up.capabilities == hosts.ALL_CAPABILITIES
    assert not up.mirror
    assert b.mirror


def test_port_directory_and_default_dir(tmp_path: Path) -> None:
    (tmp_path / "localhost_5000_").mkdir()
    (tmp_path / "localhost_5000_" / "hosts.toml").write_text('server = "http://localhost:5000"\n')
    (tmp_path / "_default").mkdir()
    (tmp_path / "_default" / "hosts.toml").write_text('[host."http://fallback:1"]\n')
    assert [e.base_url for e in hosts.configure("localhost:5000", hosts_dir=str(tmp_path))] == [
        "http://localhost:5000/v2"]
    # no server in _default: the upstream is the host itself, after the mirror
    assert [e.base_url for e in hosts.configure("quay.io", hosts_dir=str(tmp_path))] == [
        "http://fallback:1/v2", "https://quay.io/v2"]


def test_plain_dir_name_with_port(tmp_path: Path) -> None:
    (tmp_path / "127.0.0.1:5000").mkdir()
    (tmp_path / "127.0.0.1:5000" / "hosts.toml").write_text('[host."http://127.0.0.1:6000"]\n')
    eps = hosts.configure("127.0.0.1:5000", hosts_dir=str(tmp_path), plain_http=True)
    assert [e.base_url for e in eps] == ["http://127.0.0.1:6000/v2", "http://127.0.0.1:5000/v2"]


@pytest.mark.parametrize("text", ['[host."x"]\ncapabilities = ["fly"]\n', "server = [", 'host = 3\n'])
def test_bad_hosts_toml(text: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        hosts.parse_hosts_toml(text)


def test_cri_mirrors() -> None:
    eps = hosts.from_mirrors("docker.io", {"docker.io": ["https://m1.example.com", "m2.example.com:5000/sub"]},
                             {"m1.example.com": hosts.MirrorConfig(skip_verify=True)})
    assert [e.base_url for e in eps] == ["https://m1.example.com/v2", "https://m2.example.com:5000/sub/v2",
                                         "https://registry-1.docker.io/v2"]
    assert eps[0].skip_verify is True
    assert hosts.PUSH not in eps[0].capabilities
    # the wildcard applies to hosts without their own entry; localhost upstream is plain http
    eps = hosts.from_mirrors("localhost:5000", {"*": ["http://m:1"]})
    assert [e.base_url for e in eps] == ["http://m:1/v2", "http://localhost:5000/v2"]
