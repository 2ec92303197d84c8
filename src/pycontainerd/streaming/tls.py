"""TLS for the streaming server: the configured key pair, or a self-signed certificate made at start.

As containerd's CRI: ``enable_tls_streaming`` with both ``x509_key_pair_streaming``
files set serves that pair; with neither, a fresh self-signed certificate (valid for the
host name, ``localhost``, 127.0.0.1, ::1 and the listen address) lives in memory only; one of
the two alone is refused at start-up.  Blocking work (key generation, file reads): call
``server_context`` in a thread.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import tempfile

from .. import errdefs

CERT_DAYS = 365


def self_signed(hosts: list[str]) -> tuple[bytes, bytes]:
    """``(cert PEM, key PEM)``: an ECDSA P-256 certificate for ``hosts`` (names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        if not h:
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pycontainerd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "pycontainerd streaming server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def server_context(cert_file: str, key_file: str, listen_address: str) -> tuple[ssl.SSLContext, bytes | None]:
    """The server's SSL context, and the PEM of the certificate when it generated one."""
    if bool(cert_file) != bool(key_file):
        raise errdefs.InvalidArgument("x509_key_pair_streaming needs both tls_cert_file and tls_key_file "
                                      "(or neither, for a generated self-signed certificate)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise errdefs.InvalidArgument(
                f"streaming TLS key pair {cert_file} / {key_file} cannot be loaded: {exc}") from exc
        return ctx, None
    cert, key = self_signed([socket.gethostname(), "localhost", "127.0.0.1", "::1", listen_address])
    # ssl loads a chain from files only: a private temp dir, removed at once
    with tempfile.TemporaryDirectory(prefix="pycd-stream-tls-") as d:
        cpath, kpath = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for path, data in ((cpath, cert), (kpath, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cpath, kpath)
    return ctx, cert
