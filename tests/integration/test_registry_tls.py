"""Pulling from Debian's docker-registry over HTTPS (issue 3 follow-up).

The registry serves a certificate for 127.0.0.1 signed by a CA made for the test
(`running_registry(tls=True)`); a second one also demands a client certificate
(`tls_client_auth=True`, docker-registry's `clientcas`). Both are seeded over plain HTTP
first (same storage, restarted with TLS). pyctr talks to the registry itself, so these
check our registry client: it must refuse the unknown CA with an error that says what to
do, trust it through a hosts.toml `ca`, skip verification with `-k`, present a client
certificate from hosts.toml `client`. The real ctr does its own registry side: pulling with
it against our daemon checks the fixture and the daemon's part.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import images
from tests.fixtures.registry import Registry, running_registry

from .daemon import Daemon

pytestmark = pytest.mark.root

REPO = "library/busybox"


@dataclass
class TLSRegistries:
    server_only: Registry
    client_auth: Registry
    image: images.BuiltImage

    def ref(self, reg: Registry) -> str:
        return reg.ref(REPO)


@pytest.fixture(scope="module")
def tls_registries(tmp_path_factory: pytest.TempPathFactory,
                   busybox_image: images.BuiltImage) -> Iterator[TLSRegistries]:
    if not Path("/usr/bin/docker-registry").exists():
        pytest.skip("docker-registry is not installed")
    seeded = tmp_path_factory.mktemp("tls-registry")
    with running_registry(base=seeded) as plain:
        images.push_to_registry(busybox_image, plain.url, REPO, "latest")
    other = tmp_path_factory.mktemp("tls-registry-client-auth")
    shutil.copytree(seeded / "storage", other / "storage")
    with running_registry(base=seeded, tls=True) as a, running_registry(base=other, tls_client_auth=True) as b:
        assert a.url.startswith("https://") and b.tls is not None and b.tls.client_cert is not None
        yield TLSRegistries(a, b, busybox_image)


def hosts_dir(tmp_path: Path, reg: Registry, **kw: bool) -> str:
    assert reg.tls is not None
    return str(reg.tls.write_hosts_dir(tmp_path / "certs.d", reg.host, **kw))


def assert_pulled(daemon: Daemon, ref: str, img: images.BuiltImage) -> None:
    r = daemon.ctr("images", "ls")
    assert re.search(rf"^{re.escape(ref)}\s+\S+\s+{img.target.digest}", r.stdout, re.M), r.stdout
    snaps = daemon.ctr("snapshots", "ls").stdout
    assert img.chain_ids[-1] in snaps
    check = daemon.pyctr("images", "check").stdout
    assert "complete" in check and "true" in check.splitlines()[-1]


def test_unknown_ca_fails_clearly(daemon: Daemon, tls_registries: TLSRegistries) -> None:
    reg = tls_registries.server_only
    r = daemon.pyctr("images", "pull", tls_registries.ref(reg), check=False, timeout=60)
    assert r.returncode != 0
    err = r.stderr + r.stdout
    assert "certificate verify failed" in err, err
    assert "--hosts-dir" in err and "ca = " in err and "-k" in err, err
    assert reg.host in err
    # nothing was written
    assert daemon.ctr("images", "ls", "-q").stdout.strip() == ""


def test_hosts_toml_ca(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.server_only
    ref = tls_registries.ref(reg)
    daemon.pyctr("images", "pull", "--hosts-dir", hosts_dir(tmp_path, reg), ref)
    assert_pulled(daemon, ref, tls_registries.image)


def test_skip_verify(daemon: Daemon, tls_registries: TLSRegistries) -> None:
    reg = tls_registries.server_only
    ref = tls_registries.ref(reg)
    daemon.pyctr("images", "pull", "-k", ref)
    assert_pulled(daemon, ref, tls_registries.image)


def test_skip_verify_false_in_hosts_toml_wins_over_k(daemon: Daemon, tls_registries: TLSRegistries,
                                                     tmp_path: Path) -> None:
    """As containerd: an explicit skip_verify in hosts.toml is kept even with --skip-verify."""
    reg = tls_registries.server_only
    d = hosts_dir(tmp_path, reg, ca=False, skip_verify=False)
    r = daemon.pyctr("images", "pull", "-k", "--hosts-dir", d, tls_registries.ref(reg), check=False, timeout=60)
    assert r.returncode != 0 and "certificate verify failed" in r.stderr + r.stdout


def test_real_ctr_with_hosts_dir(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.server_only
    ref = tls_registries.ref(reg)
    daemon.ctr("images", "pull", "--hosts-dir", hosts_dir(tmp_path, reg), ref)
    assert_pulled(daemon, ref, tls_registries.image)
    r = daemon.ctr("run", "--rm", ref, "tls-pulled", "echo", "tls-ok")
    assert "tls-ok" in r.stdout


def test_https_to_a_plain_http_registry_says_use_plain_http(daemon: Daemon, pushed_busybox: object,
                                                            tmp_path: Path) -> None:
    ref = pushed_busybox.ref  # type: ignore[attr-defined]
    # a local registry that speaks plain HTTP is pulled from over plain HTTP, as ctr does (issue 15) ...
    r = daemon.pyctr("images", "pull", ref, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    # ... unless the hosts configuration decides (an empty hosts dir: the default https endpoint)
    r = daemon.pyctr("images", "pull", "--hosts-dir", str(tmp_path), ref, check=False, timeout=60)
    assert r.returncode != 0
    assert "--plain-http" in r.stderr + r.stdout, r.stderr


def test_plain_http_to_a_tls_registry_says_drop_plain_http(daemon: Daemon, tls_registries: TLSRegistries) -> None:
    reg = tls_registries.server_only
    r = daemon.pyctr("images", "pull", "--plain-http", tls_registries.ref(reg), check=False, timeout=60)
    assert r.returncode != 0
    assert "speaks HTTPS: drop --plain-http" in r.stderr + r.stdout, r.stderr


# -- client certificates -----------------------------------------------------------------------


def test_client_cert_required_fails_clearly(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.client_auth
    r = daemon.pyctr("images", "pull", "--hosts-dir", hosts_dir(tmp_path, reg), tls_registries.ref(reg),
                     check=False, timeout=60)
    assert r.returncode != 0
    err = r.stderr + r.stdout
    assert "client certificate" in err and "client = " in err, err


def test_client_cert_from_hosts_toml(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.client_auth
    ref = tls_registries.ref(reg)
    daemon.pyctr("images", "pull", "--hosts-dir", hosts_dir(tmp_path, reg, client=True), ref)
    assert_pulled(daemon, ref, tls_registries.image)


def test_real_ctr_with_client_cert(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.client_auth
    ref = tls_registries.ref(reg)
    daemon.ctr("images", "pull", "--hosts-dir", hosts_dir(tmp_path, reg, client=True), ref)
    assert_pulled(daemon, ref, tls_registries.image)


def test_missing_ca_file_is_named(daemon: Daemon, tls_registries: TLSRegistries, tmp_path: Path) -> None:
    reg = tls_registries.server_only
    d = tmp_path / "certs.d" / reg.host
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(f'server = "https://{reg.host}"\nca = "{tmp_path}/nope.pem"\n')
    r = daemon.pyctr("images", "pull", "--hosts-dir", str(tmp_path / "certs.d"), tls_registries.ref(reg),
                     check=False, timeout=60)
    assert r.returncode != 0 and "nope.pem" in r.stderr + r.stdout, r.stderr
