"""Local HTTP(S) servers on 127.0.0.1 for egress tests, and the test CA that verifies the HTTPS ones.

Secrets are injected over https only, so the tests that watch a secret travel need a TLS
server the host can verify: a throw-away CA (made once per test session) signs a certificate
for `localhost` and 127.0.0.1, and the test policy names that CA file
(`EgressPolicy.unsafe_ca_file_for_tests`, or the Django setting LIGHTFAST_TEST_EGRESS_CA_FILE).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@functools.cache
def tls_files_for_tests() -> tuple[str, str, str]:
    """(CA certificate, server certificate chain, server key) paths; made once per session."""
    directory = Path(tempfile.mkdtemp(prefix="lightfast-test-ca-"))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightfast test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(ca_path), str(cert_path), str(key_path)


def ca_file_for_tests() -> str:
    """The CA file a test policy trusts for the servers `serve(..., tls=True)` starts."""
    return tls_files_for_tests()[0]


class _TLSServer(ThreadingHTTPServer):
    context: ssl.SSLContext

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, address = super().get_request()
        # The handshake happens in the handler's thread (on first read), never in the accept loop.
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], *, tls: bool = False) -> Iterator[int]:
    """Run `handler` on 127.0.0.1 (HTTPS with the test CA's certificate if `tls`); yields the port."""
    server: ThreadingHTTPServer
    if tls:
        _, cert, key = tls_files_for_tests()
        server = _TLSServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.context = context
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
