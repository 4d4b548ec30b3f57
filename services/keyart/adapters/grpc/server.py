"""The page service behind a plain grpc.aio server, in one process.

Used as the baseline of `make bench` and by tests that need gRPC without Ray.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keyart.adapters.grpc.auth import TokenAuth
from keyart.adapters.grpc.convert import MAX_MESSAGE_BYTES
from keyart.adapters.grpc.health import HealthServicer
from keyart.adapters.grpc.servicer import ArtworkRankerServicer, RankerCalls
from keyart.adapters.grpc.tls import ServerTls
from keyart.adapters.grpc.wire import SERVICE as SERVICE_NAME
from keyart.adapters.grpc.wire import add_artwork_ranker_to_server
from keyart.core.page import PageService


async def start_bare_server(service: PageService, address: str, auth: TokenAuth | None = None,
                            tls: ServerTls | None = None) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server on address ("127.0.0.1:0" picks a port); returns (server, port).
    auth: tokens RankArtwork and ReportOutcome require (Health and reflection stay open).
    tls: serve TLS only (mutual TLS when it names a client CA)."""
    # gRPC's own 4 MiB receive limit, set explicitly: the largest valid page (200 titles of
    # 100 candidates, ids of 128 characters) is about 2.7 MB; larger is RESOURCE_EXHAUSTED.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    add_artwork_ranker_to_server(ArtworkRankerServicer(RankerCalls(service, auth)), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service), server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    await server.start()
    return server, port
