"""The daemon's own gRPC server (``pycontainerd.rpc``) as configured by ``[grpc]``, checked with
grpc's python client: ``max_recv_message_size``/``max_send_message_size`` with grpc's codes and
wording, and ``tcp_address``: a TCP server as containerd's, carrying the CRI when
``disable_tcp_service = false`` (nothing else): plaintext, or TLS (ALPN h2) with
``tcp_tls_cert``/``tcp_tls_key``, and with ``tcp_tls_ca`` only clients presenting a certificate
that CA signed.  The unix socket keeps serving beside it, and the running daemon
has not loaded grpc."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from pycontainerd.api.cri.runtime.v1 import api_pb2 as cri_pb
from pycontainerd.api.cri.runtime.v1 import api_pb2_grpc as cri_pb_grpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2_grpc
from tests.fixtures.procs import free_port
from tests.fixtures.registry import make_tls_files
from tests.integration.daemon import running_daemon

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


CRI_ON_TCP = '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = false\n'


def _version(channel: grpc.Channel) -> str:
    return version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=10).version


def _cri_version(channel: grpc.Channel) -> str:
    return str(cri_pb_grpc.RuntimeServiceStub(channel).Version(cri_pb.VersionRequest(), timeout=10).runtime_name)


def _unimplemented(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    return err.value.details() or ""


def test_message_size_limits_from_the_config() -> None:
    # large enough for `ctr version` (the harness's readiness check), not for the plugin list
    config = "version = 2\n[grpc]\n  max_recv_message_size = 4096\n  max_send_message_size = 300\n"
    with running_daemon(config) as d, grpc.insecure_channel(f"unix:{d.address}") as ch:
        events = events_pb2_grpc.EventsStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            events.Publish(events_pb2.PublishRequest(topic="/" + "x" * 5000), metadata=(("containerd-namespace", "a"),),
                           timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.value.details() or "").startswith("Received message larger than max (")
        with pytest.raises(grpc.RpcError) as err:
            introspection_pb2_grpc.IntrospectionStub(ch).Plugins(introspection_pb2.PluginsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.value.details() or "").startswith("Sent message larger than max (")


def test_tcp_serves_the_cri_only_with_disable_tcp_service_false_and_the_daemon_has_no_grpc() -> None:
    """As containerd: the TCP server carries only TCP services (the CRI, when allowed)."""
    port = free_port()
    with running_daemon(f'version = 2\n[grpc]\n  tcp_address = "127.0.0.1:{port}"\n{CRI_ON_TCP}') as d:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert _cri_version(ch) == "pycontainerd"
            assert _unimplemented(lambda: _version(ch)) == "unknown service containerd.services.version.v1.Version"
        with grpc.insecure_channel(f"unix:{d.address}") as ch:  # the unix socket serves everything
            assert _version(ch) and _cri_version(ch) == "pycontainerd"
        # grpc's extension module is mapped once grpc is imported: the daemon serves without it
        maps = Path(f"/proc/{d.pid}/maps").read_text()
        assert "cygrpc" not in maps and "/grpc/" not in maps
    port = free_port()
    with running_daemon(f'version = 2\n[grpc]\n  tcp_address = "127.0.0.1:{port}"\n') as d, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert _unimplemented(lambda: _cri_version(ch)) == "unknown service runtime.v1.RuntimeService"


def test_tls_with_client_ca_requires_a_client_certificate() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pycd-tls-") as tmp:
        tls = make_tls_files(Path(tmp), client_auth=True)
        assert tls.client_ca_cert and tls.client_cert and tls.client_key
        config = (f'version = 2\n[grpc]\n  tcp_address = "127.0.0.1:{port}"\n'
                  f'  tcp_tls_cert = "{tls.server_cert}"\n  tcp_tls_key = "{tls.server_key}"\n'
                  f'  tcp_tls_ca = "{tls.client_ca_cert}"\n{CRI_ON_TCP}')
        with running_daemon(config):
            ca = tls.ca_cert.read_bytes()
            good = grpc.ssl_channel_credentials(root_certificates=ca, private_key=tls.client_key.read_bytes(),
                                                certificate_chain=tls.client_cert.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", good) as ch:
                assert _cri_version(ch) == "pycontainerd"
            # no client certificate: the handshake fails, no call is served
            with grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca)) as ch:
                with pytest.raises(grpc.RpcError) as err:
                    _cri_version(ch)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # plaintext to a TLS port is no gRPC either
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):
                _cri_version(ch)


def test_tls_without_client_ca_serves_any_client() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pycd-tls-") as tmp:
        tls = make_tls_files(Path(tmp))
        config = (f'version = 2\n[grpc]\n  tcp_address = "127.0.0.1:{port}"\n'
                  f'  tcp_tls_cert = "{tls.server_cert}"\n  tcp_tls_key = "{tls.server_key}"\n{CRI_ON_TCP}')
        with running_daemon(config):
            creds = grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
                assert _cri_version(ch) == "pycontainerd"
