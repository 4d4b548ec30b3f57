"""The same handler behind a plain grpc.aio server, in one process.

Used as the baseline of `make bench` and by tests that need gRPC without Ray.
"""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keyart.core.page import ArtworkRankerHandler
from keyart.adapters.grpc.status import status_for
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ArtworkRanker"].full_name


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ArtworkRankerServicer(ranking_pb2_grpc.ArtworkRankerServicer):
    def __init__(self, handler: ArtworkRankerHandler) -> None:
        self.handler = handler

    async def RankArtwork(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            return self.handler.rank(request, _deadline(context))
        except Exception as exc:
            code, details = status_for(exc)
            await context.abort(code, details)

    async def ReportOutcome(self, request, context):  # noqa: N802
        try:
            return self.handler.report(request)
        except Exception as exc:
            code, details = status_for(exc)
            await context.abort(code, details)


class HealthServicer(health_pb2_grpc.HealthServicer):
    """SERVING only once model and catalog are loaded."""

    def __init__(self, handler: ArtworkRankerHandler) -> None:
        self.handler = handler

    async def Check(self, request, context):  # noqa: N802
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.handler.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


async def start_bare_server(handler: ArtworkRankerHandler, address: str) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server on address ("127.0.0.1:0" picks a port); returns (server, port)."""
    server = grpc.aio.server()
    ranking_pb2_grpc.add_ArtworkRankerServicer_to_server(ArtworkRankerServicer(handler), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(handler), server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


def run_bare(settings, port: int) -> None:  # settings: KeyartSettings
    """Serve the handler on a plain grpc.aio server until interrupted."""
    import asyncio

    from keyart.app.runtime import Runtime

    async def serve() -> None:
        runtime = Runtime.start(settings)
        server, bound = await start_bare_server(runtime.handler, f"0.0.0.0:{port}")
        print(f"READY bare grpc.aio keyart.v1.ArtworkRanker on 127.0.0.1:{bound}", flush=True)
        try:
            await server.wait_for_termination()
        finally:
            runtime.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
