"""A loopback stand-in for vLLM's public asset bucket: HTTPS on ``127.0.0.1:443``.

vLLM's tests name the bucket through ``vllm.assets.base.VLLM_S3_BUCKET_URL``; the suite
points that at ``https://127.0.0.1`` before the test modules are imported, so the URLs the
tests build (``{VLLM_S3_BUCKET_URL}/multimodal_asset/...``) and the allowlist entries they
derive from it (``VLLM_S3_BUCKET_URL.removeprefix("https://")``) keep their shape: HTTPS,
the default port, a host without a port. The certificate comes from a throwaway CA that the
suite's process trusts through ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import mimetypes
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["BUCKET_HOST", "BUCKET_PORT", "BUCKET_URL", "BucketServer", "make_certificates"]

BUCKET_HOST = "127.0.0.1"
BUCKET_PORT = 443
BUCKET_URL = f"https://{BUCKET_HOST}"


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``127.0.0.1``/``localhost`` it signed.

    Returns:
        The CA's certificate (the trust store), the server's certificate chain and its key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vllm suite loopback CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BUCKET_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(BUCKET_HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, chain_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    chain_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, chain_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, body: bool) -> None:
        key = self.path.split("?", 1)[0].lstrip("/")
        self.server.owner.requests.append(self.path)
        data = self.server.owner.objects.get(key)
        if data is None:
            self.send_error(404, "NoSuchKey")
            return
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: BucketServer


class BucketServer:
    """Serves ``objects`` (key -> bytes) over HTTPS on ``127.0.0.1:443`` while entered."""

    def __init__(self, objects: Mapping[str, bytes], chain: Path, key: Path) -> None:
        self.objects = dict(objects)
        #: Every path asked for, in order.
        self.requests: list[str] = []
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(chain, key)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BucketServer:
        server = _Server((BUCKET_HOST, BUCKET_PORT), _Handler, bind_and_activate=False)
        server.owner = self
        server.allow_reuse_address = True
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        server.socket = self._context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
