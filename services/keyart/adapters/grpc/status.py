"""The one table from Keyart errors to gRPC status codes.

Transports call `status_for` and send the code and details; users never see a
stack trace, and the details name the offending field.
"""

from __future__ import annotations

import logging
import traceback

import grpc

from keyart.core.log_limit import LimitedLog
from keyart.errors import InvalidRequest, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)
limited = LimitedLog(log)

_TABLE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """gRPC status code and details for an exception raised by the page service."""
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            return code, str(exc)
    # One line per error type and place per 10 s: the type and where it was raised, not
    # its message (it may carry request values, member ids included), no traceback.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    limited.error(f"unexpected:{type(exc).__name__}:{where}", "unexpected %s at %s while answering a call",
                  type(exc).__name__, where)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see server log"
