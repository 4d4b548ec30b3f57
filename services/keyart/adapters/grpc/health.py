"""grpc.health.v1.Health for the bare server: SERVING once the catalog is loaded (a model is not needed)."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyart.core.page import PageService


def health_status(service: PageService) -> int:
    """The HealthCheckResponse status the service is in now."""
    return health_pb2.HealthCheckResponse.SERVING if service.ready() else health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, service: PageService) -> None:
        self.service = service

    async def Check(self, request, context):  # noqa: N802 (gRPC method name)
        return health_pb2.HealthCheckResponse(status=health_status(self.service))  # type: ignore[arg-type]
