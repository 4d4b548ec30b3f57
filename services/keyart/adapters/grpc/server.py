"""The page service behind a plain grpc.aio server, in one process.

Used as the baseline of `make bench` and by tests that need gRPC without Ray.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keyart.adapters.grpc.health import HealthServicer
from keyart.adapters.grpc.servicer import ArtworkRankerServicer, RankerCalls
from keyart.core.page import PageService
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ArtworkRanker"].full_name


async def start_bare_server(service: PageService, address: str) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server on address ("127.0.0.1:0" picks a port); returns (server, port)."""
    server = grpc.aio.server()
    ranking_pb2_grpc.add_ArtworkRankerServicer_to_server(ArtworkRankerServicer(RankerCalls(service)), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service), server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
