"""keyart.v1.ArtworkRanker on protobuf: convert, delegate to the page service, convert back.

`RankerCalls` holds the two synchronous calls shared by every transport (the
grpc.aio servicer below and the Ray Serve deployment); errors become a gRPC
status through the one table in `status.py`. The page itself is CPU work plus a
bounded wait for member features (the feature timeout), and async transports run it
on their event loop's thread: a process serves one page at a time either way, and a
hop to a worker thread cost more CPU than it bought (see `ArtworkRankerServicer`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import grpc

from keyart.adapters.grpc import convert
from keyart.adapters.grpc.auth import TokenAuth
from keyart.adapters.grpc.status import status_for
from keyart.core.page import PageRequest, PageService
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

Metadata = Iterable[tuple[str, str | bytes]]


class RankerCalls:
    """RankArtwork and ReportOutcome as plain synchronous calls on protobuf messages.

    auth: when set, every call's metadata must carry a token allowed the method."""

    def __init__(self, service: PageService, auth: TokenAuth | None = None) -> None:
        self.service = service
        self.auth = auth

    def rank(self, request: pb.RankArtworkRequest | bytes, deadline: float | None = None,
             metadata: Metadata = ()) -> pb.RankArtworkResponse:
        """request: the message, or its wire bytes (transports registered by `wire`);
        deadline: time.monotonic() by which to answer, if the client set one.

        Raises:
            Unauthenticated, PermissionDenied: `auth` is set and the token is missing or not allowed.
            InvalidRequest: the request does not parse or is structurally wrong (the field is named).
        """
        if self.auth is not None:
            self.auth.check(metadata, "RankArtwork")
        request = convert.parse_message(pb.RankArtworkRequest, request)
        now = self.service.clock()
        member_id, context, titles = convert.parse_rank_request(request, now)
        page = PageRequest(request_id=request.request_id, member_id=member_id, context=context, titles=titles)
        result = self.service.rank(page, deadline=deadline, now=now)
        return convert.to_response(result.selections, result.model_version, result.policy)

    def report(self, request: pb.ReportOutcomeRequest | bytes, metadata: Metadata = ()) -> pb.ReportOutcomeResponse:
        """Raises InvalidRequest for bytes that do not parse or a malformed outcome: the
        whole batch is refused (and Unauthenticated or PermissionDenied as `rank`)."""
        if self.auth is not None:
            self.auth.check(metadata, "ReportOutcome")
        request = convert.parse_message(pb.ReportOutcomeRequest, request)
        accepted = self.service.report(convert.parse_outcomes(request, self.service.clock()))
        return pb.ReportOutcomeResponse(accepted=accepted)


def client_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a time.monotonic() instant, if it set one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ArtworkRankerServicer(ranking_pb2_grpc.ArtworkRankerServicer):
    """grpc.aio servicer: each call runs on the event loop's own thread.

    A page is ~2 ms of CPU work under the GIL, so a process serves one page at a time
    however it is scheduled; measured with `make bench`, several page threads lost ~20%
    of throughput to GIL contention against one. One page thread fed by
    `run_in_executor` still paid a thread hop per call and made the loop and the page
    thread contend for the GIL: running the page on the loop itself cost 3.12 ms of CPU
    per page against 3.72 ms, with 17% more pages per second (one bare process, 8 calls
    in flight, 6 interleaved rounds). The loop waits for the page, as the next page
    would have; Health and ReportOutcome wait at most one page. Scale with processes
    (replicas), not threads.
    """

    def __init__(self, calls: RankerCalls) -> None:
        self.calls = calls

    async def RankArtwork(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            return self.calls.rank(request, client_deadline(context), context.invocation_metadata() or ())
        except Exception as exc:
            code, details = status_for(exc)
            await context.abort(code, details)

    async def ReportOutcome(self, request, context):  # noqa: N802
        try:
            return self.calls.report(request, context.invocation_metadata() or ())
        except Exception as exc:
            code, details = status_for(exc)
            await context.abort(code, details)
