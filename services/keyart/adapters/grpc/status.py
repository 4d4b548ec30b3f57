"""The one table from Keyart errors to gRPC status codes.

Transports call `status_for` and send the code and details; users never see a
stack trace, and the details name the offending field.
"""

from __future__ import annotations

import logging

import grpc

from keyart.errors import InvalidRequest

log = logging.getLogger(__name__)

_TABLE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """gRPC status code and details for an exception raised by the page service."""
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            return code, str(exc)
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server log"
