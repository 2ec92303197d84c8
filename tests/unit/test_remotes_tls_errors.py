"""TLS failures and plain-HTTP-on-TLS answers become errors that say what to configure."""

from __future__ import annotations

import ssl

import httpx

from pycontainerd import errdefs
from pycontainerd.remotes.hosts import Endpoint
from pycontainerd.remotes.http import status_error, tls_problem

EP = Endpoint("https", "127.0.0.1:5000")


def _wrapped(inner: BaseException) -> httpx.ConnectError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as outer:
        return outer


def test_untrusted_certificate() -> None:
    inner = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    inner.verify_message = "unable to get local issuer certificate"
    msg = tls_problem(_wrapped(inner), EP)
    assert msg is not None
    assert "certificate verify failed for 127.0.0.1:5000: unable to get local issuer certificate" in msg
    assert 'ca = "/path/to/ca.pem" in <hosts-dir>/127.0.0.1:5000/hosts.toml' in msg and "-k" in msg


def test_client_certificate_required() -> None:
    inner = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    msg = tls_problem(inner, EP)
    assert msg is not None and "requires a client certificate" in msg and "client = " in msg


def test_tls_to_a_plain_server() -> None:
    inner = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    msg = tls_problem(_wrapped(inner), EP)
    assert msg is not None and "--plain-http" in msg


def test_other_transport_errors_are_not_tls_problems() -> None:
    assert tls_problem(httpx.ConnectError("[Errno 111] Connection refused"), EP) is None


def test_plain_http_on_a_tls_port() -> None:
    req = httpx.Request("GET", "http://127.0.0.1:5000/v2/x/manifests/latest")
    resp = httpx.Response(400, request=req, content=b"Client sent an HTTP request to an HTTPS server.\n")
    err = status_error(resp, "GET x")
    assert isinstance(err, errdefs.InvalidArgument)
    assert "127.0.0.1:5000 speaks HTTPS: drop --plain-http" in str(err)
    streamed = httpx.Response(400, request=req)
    err = status_error(streamed, "GET x", body=b"Client sent an HTTP request to an HTTPS server.\n")
    assert "drop --plain-http" in str(err)


def test_registry_json_error_from_a_streamed_body() -> None:
    req = httpx.Request("GET", "https://127.0.0.1:5000/v2/x/manifests/latest")
    body = b'{"errors": [{"code": "DENIED", "message": "no"}]}'
    err = status_error(httpx.Response(403, request=req), "GET x", body=body)
    assert isinstance(err, errdefs.PermissionDenied) and "DENIED: no" in str(err)
