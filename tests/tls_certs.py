"""Throw-away PKI for the TLS tests: a CA, a server certificate for 127.0.0.1 and
localhost, and client certificates (one from another CA, to be refused)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path

    def read(self, *paths: Path) -> tuple[bytes, ...]:
        return tuple(p.read_bytes() for p in paths)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    ca = _cert("keyart test CA", ca_key, None, ca_key, ca=True)
    other = _cert("another CA", other_key, None, other_key, ca=True)

    def issue(stem: str, subject: str, issuer: x509.Certificate, issuer_key, server: bool = False) -> tuple[Path, Path]:
        key = _key()
        cert = _cert(subject, key, issuer.subject, issuer_key, server=server)
        cert_path = directory / f"{stem}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, _write_key(key, directory / f"{stem}.key")

    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = issue("server", "localhost", ca, ca_key, server=True)
    client_cert, client_key = issue("client", "ui-tier", ca, ca_key)
    stranger_cert, stranger_key = issue("stranger", "stranger", other, other_key)
    return Pki(directory / "ca.crt", server_cert, server_key, client_cert, client_key, stranger_cert, stranger_key)


def health_status(channel) -> str:
    """grpc.health.v1 Check over ``channel``: the status name, or the RPC error's code."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
