"""Ray Serve application: one ingress deployment wrapping the plain-Python handler.

The whole request path (validation, features, scoring, policy, log enqueue) runs
in one replica: every extra deployment hop would cost a serialization and a
process switch. Replicas scale out by Serve autoscaling. The gRPC ingress also
answers grpc.health.v1.Health/Check (SERVING once model and features are loaded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from keyart.adapters.ray_serve.metrics import RayExporter
from keyart.core.metrics import AggregatingMetrics
from keyart.adapters.grpc.status import status_for
from keyart.app.runtime import Runtime
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb

log = logging.getLogger(__name__)


class AppArgs(BaseModel):
    """Arguments of the Serve application (the `args:` block of the Serve config).

    `settings` overrides KeyartSettings fields; anything not given comes from
    KEYART_* environment variables and then the defaults.
    """

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = {}


@serve.deployment(name="ArtworkRanker", max_ongoing_requests=32)
class ArtworkRankerDeployment:
    """gRPC ingress for keyart.v1.ArtworkRanker and grpc.health.v1.Health."""

    def __init__(self, args: dict[str, Any]) -> None:
        app_args = AppArgs.model_validate(args)
        logging.basicConfig(level=logging.INFO)
        self.metrics = AggregatingMetrics()
        self.runtime = Runtime.start(KeyartSettings(**app_args.settings), metrics=self.metrics)
        self.exporter = RayExporter()
        self._export_task = asyncio.get_event_loop().create_task(self._export_loop())

    async def _export_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.exporter.export(self.metrics, self.runtime)
            except Exception:
                log.exception("metrics export")

    async def RankArtwork(  # noqa: N802 (gRPC method name)
        self, request: pb.RankArtworkRequest, grpc_context: RayServegRPCContext
    ) -> pb.RankArtworkResponse:
        try:
            return self.runtime.handler.rank(request, None)
        except Exception as exc:
            return self._error(exc, grpc_context, pb.RankArtworkResponse())

    async def ReportOutcome(  # noqa: N802
        self, request: pb.ReportOutcomeRequest, grpc_context: RayServegRPCContext
    ) -> pb.ReportOutcomeResponse:
        try:
            return self.runtime.handler.report(request)
        except Exception as exc:
            return self._error(exc, grpc_context, pb.ReportOutcomeResponse())

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:  # noqa: N802
        ready = self.runtime.handler.ready()
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def check_health(self) -> None:
        """Ray Serve's replica health probe: unhealthy replicas are restarted."""
        if self.runtime.writer is not None:
            ok, detail = self.runtime.writer.health()  # type: ignore[attr-defined]
            if not ok:
                log.error("decision log unhealthy: %s", detail)

    def _error(self, exc: Exception, grpc_context: RayServegRPCContext, empty: Any) -> Any:
        code, details = status_for(exc)
        grpc_context.set_code(code)
        grpc_context.set_details(details)
        return empty

    def __del__(self) -> None:
        try:
            self.runtime.close()
        except Exception:
            pass


def build_app(args: dict[str, Any]) -> serve.Application:
    """Typed app builder used by the Serve config (`import_path: keyart.adapters.ray_serve.app:build_app`)."""
    AppArgs.model_validate(args)  # fail at deploy time, with the field named, not in a replica
    return ArtworkRankerDeployment.bind(dict(args))  # type: ignore[attr-defined]


def wait_serving(address: str, timeout_s: float = 120.0) -> None:
    """Block until Health/Check answers SERVING at address."""
    from grpc_health.v1 import health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            last = exc.code().name
        time.sleep(0.5)
    raise TimeoutError(f"{address} not SERVING after {timeout_s:.0f} s (last: {last})")
