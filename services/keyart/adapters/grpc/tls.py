"""TLS and mutual TLS of the gRPC ingress, from three PEM files named in settings.

The bare server uses these credentials itself; on Ray Serve, whose gRPC ingress has no
TLS, `keyart up` puts a TLS-terminating HAProxy in front (:mod:`keyart.adapters.ray_serve.tls_front`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from keyart.errors import TlsConfigError


def _pem(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from exc
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{what} {path}: not a PEM file (no -----BEGIN line)")
    return data


@dataclass(frozen=True)
class ServerTls:
    """The ingress's certificate chain and key, and the CA its clients' certificates must
    chain to (None: clients are not asked for a certificate)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_files(cls, cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
        """None when no certificate is configured; every file is read once here, so a bad
        one is refused at start with its name."""
        if cert is None or key is None:
            return None
        tls = cls(Path(cert), Path(key), Path(client_ca) if client_ca is not None else None)
        tls.pem()
        return tls

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, key, client CA or None), checked to be PEM."""
        ca = _pem(self.client_ca_file, "TLS client CA") if self.client_ca_file is not None else None
        return _pem(self.cert_file, "TLS certificate"), _pem(self.key_file, "TLS key"), ca

    def credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self.pem()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
