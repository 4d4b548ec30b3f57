"""Typed errors raised by domain code; edges map them to gRPC status or CLI messages."""

from __future__ import annotations


class KeyartError(Exception):
    """Base of every error Keyart raises on purpose."""


class InvalidRequest(KeyartError):
    """A request is structurally wrong; `field` names the offending field path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ModelLoadError(KeyartError):
    """A model artifact cannot be served (missing, corrupt, or schema mismatch)."""


class Unauthenticated(KeyartError):
    """A call without a valid token (gRPC UNAUTHENTICATED)."""


class PermissionDenied(KeyartError):
    """A valid token not allowed this method (gRPC PERMISSION_DENIED)."""


class AuthConfigError(KeyartError):
    """The token file cannot be used (its path, field and reason are named)."""


class TlsConfigError(KeyartError):
    """A TLS certificate, key or CA file that cannot be used; the message names the file."""
