"""keyart.v1.ArtworkRanker registered with raw request bytes, parsed by Keyart itself.

The generated `add_ArtworkRankerServicer_to_server` parses each request inside gRPC,
where bytes that do not parse (truncated, mutated, a string that is not UTF-8) end as
UNKNOWN with the parser's exception type in the details. Registered here, the handlers
receive the bytes and `convert.parse_message` answers INVALID_ARGUMENT "request: does
not parse". Ray Serve's proxy keeps a handler's request deserializer (it replaces only
the response serializer), so naming this function in `grpc_servicer_functions` moves the
parse from the proxy to the replica, behind the same status table.
"""

from __future__ import annotations

from typing import Any

import grpc

from keyart.v1 import ranking_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ArtworkRanker"].full_name


def add_artwork_ranker_to_server(servicer: Any, server: Any) -> None:
    """As the generated add function, with `request_deserializer=None`: handlers get bytes."""
    handlers = {
        "RankArtwork": grpc.unary_unary_rpc_method_handler(
            servicer.RankArtwork, request_deserializer=None,
            response_serializer=pb.RankArtworkResponse.SerializeToString),
        "ReportOutcome": grpc.unary_unary_rpc_method_handler(
            servicer.ReportOutcome, request_deserializer=None,
            response_serializer=pb.ReportOutcomeResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.62
        server.add_registered_method_handlers(SERVICE, handlers)
