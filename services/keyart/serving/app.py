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
from ray.serve.metrics import Counter, Gauge, Histogram

from keyart.api.metrics import LATENCY_BUCKETS_S, AggregatingMetrics
from keyart.api.status import status_for
from keyart.runtime import Runtime
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


class _RayExporter:
    """Drains AggregatingMetrics into Ray Serve metrics (scraped by Prometheus)."""

    def __init__(self) -> None:
        self.decisions = Counter(
            "keyart_decisions_total",
            "Personalized decisions",
            tag_keys=("policy", "explored"),  # type: ignore[arg-type]  # Ray's hint says tuple[str]
        )
        self.fallbacks = Counter("keyart_fallbacks_total", "Default artwork served", tag_keys=("reason",))
        self.propensity = Counter(
            "keyart_propensity_bucket_total", "Decisions by propensity bucket (le)", tag_keys=("le",)
        )
        self.page_latency = Histogram(
            "keyart_rank_latency_seconds", "RankArtwork handler time", boundaries=list(LATENCY_BUCKETS_S)
        )
        self.feature_latency = Histogram(
            "keyart_feature_latency_seconds", "Member feature lookup", boundaries=list(LATENCY_BUCKETS_S)
        )
        self.feature_failures = Counter("keyart_feature_failures_total", "Feature lookups failed")
        self.outcomes = Counter("keyart_outcomes_total", "Outcomes accepted")
        self.model = Gauge("keyart_model_info", "1 for the model version serving", tag_keys=("version",))
        self.log_gauges = {
            name: Gauge(f"keyart_log_{name}", f"Decision log {name}")
            for name in ("queue_depth", "written", "spooled", "replayed", "dropped")
        }

    def export(self, metrics: AggregatingMetrics, runtime: Runtime) -> None:
        d = metrics.drain()
        for (policy, explored), n in d.decisions.items():
            self.decisions.inc(n, tags={"policy": policy, "explored": str(explored).lower()})
        for reason, n in d.fallbacks.items():
            self.fallbacks.inc(n, tags={"reason": reason})
        for le, n in d.propensity.items():
            self.propensity.inc(n, tags={"le": le})
        for s in d.page_latency:
            self.page_latency.observe(s)
        for s in d.feature_latency:
            self.feature_latency.observe(s)
        if d.feature_failures:
            self.feature_failures.inc(d.feature_failures)
        if d.outcomes:
            self.outcomes.inc(d.outcomes)
        version = runtime.handler.model_version
        if version:
            self.model.set(1, tags={"version": version})
        writer = runtime.writer
        if writer is not None:
            stats = writer.stats()  # type: ignore[attr-defined]
            for name, gauge in self.log_gauges.items():
                gauge.set(float(stats.get(name, 0)))


@serve.deployment(name="ArtworkRanker", max_ongoing_requests=32)
class ArtworkRankerDeployment:
    """gRPC ingress for keyart.v1.ArtworkRanker and grpc.health.v1.Health."""

    def __init__(self, args: dict[str, Any]) -> None:
        app_args = AppArgs.model_validate(args)
        logging.basicConfig(level=logging.INFO)
        self.metrics = AggregatingMetrics()
        self.runtime = Runtime.start(KeyartSettings(**app_args.settings), metrics=self.metrics)
        self.exporter = _RayExporter()
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
    """Typed app builder used by the Serve config (`import_path: keyart.serving.app:build_app`)."""
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
