"""Ray Serve application: one ingress deployment wrapping the page service.

The whole request path (validation, features, scoring, policy, log enqueue) runs
in one replica: every extra deployment hop would cost a serialization and a
process switch. Replicas scale out by Serve autoscaling. The gRPC ingress also
answers grpc.health.v1.Health/Check (SERVING once the catalog is loaded; with
no model yet the pages explore uniformly).

The deployment does not build its runtime: the composition root
(`keyart.app.serve.build_app`, named by the Serve config) binds a factory, so this
adapter depends only on the core's types.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from keyart.adapters.grpc.auth import TokenAuth
from keyart.adapters.grpc.health import health_status
from keyart.adapters.grpc.servicer import RankerCalls
from keyart.adapters.grpc.status import status_for
from keyart.adapters.ray_serve.metrics import RayExporter
from keyart.core.metrics import AggregatingMetrics
from keyart.core.page import PageService
from keyart.core.ports import DecisionLog, PageMetrics
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb

log = logging.getLogger(__name__)


class ServingRuntime(Protocol):
    """What a replica serves: a page service and the decision log it writes to."""

    settings: KeyartSettings
    page: PageService
    writer: DecisionLog | None

    def broken(self) -> str: ...

    def close(self) -> None: ...


RuntimeFactory = Callable[[KeyartSettings, PageMetrics], ServingRuntime]


class AppArgs(BaseModel):
    """Arguments of the Serve application (the `args:` block of the Serve config).

    `settings` overrides KeyartSettings fields; anything not given comes from
    KEYART_* environment variables and then the defaults.
    """

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = {}


@serve.deployment(name="ArtworkRanker", max_ongoing_requests=32)
class ArtworkRankerDeployment:
    """gRPC ingress for keyart.v1.ArtworkRanker and grpc.health.v1.Health.

    RankArtwork and ReportOutcome run on the replica's event loop thread (with
    RAY_SERVE_THROUGHPUT_OPTIMIZED Serve runs user code on the replica's main loop), as
    in the bare server (`ArtworkRankerServicer`): a page is CPU work under the GIL, so a
    replica serves one page at a time either way, and the hop to a page thread cost
    more CPU than it bought. The loop waits at most one page (its budget bounds it).

    The client's deadline cannot be honoured here: RayServegRPCContext copies the
    call's metadata, peer and auth context but not its deadline (ray/serve/grpc_util.py,
    Ray 2.60), and gRPC strips `grpc-timeout` from the metadata. The server budget
    (KEYART_REQUEST_BUDGET_MS) bounds every page instead, and the client's own
    deadline still ends the call on its side.
    """

    def __init__(self, args: dict[str, Any], start_runtime: RuntimeFactory) -> None:
        app_args = AppArgs.model_validate(args)
        logging.basicConfig(level=logging.INFO)
        self.metrics = AggregatingMetrics()
        self.runtime = start_runtime(KeyartSettings(**app_args.settings), self.metrics)
        settings = self.runtime.settings
        auth = TokenAuth.from_file(settings.auth_tokens_file) if settings.auth_tokens_file else None
        self.calls = RankerCalls(self.runtime.page, auth)
        self.drain_flag = self.runtime.settings.drain_flag
        self.exporter = RayExporter()
        self._export_task = asyncio.get_event_loop().create_task(self._export_loop())

    async def _export_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.exporter.export(self.metrics, self.runtime.page.model_version, self.runtime.writer)
            except Exception:
                log.exception("metrics export")

    async def RankArtwork(  # noqa: N802 (gRPC method name)
        self, request: pb.RankArtworkRequest | bytes, grpc_context: RayServegRPCContext
    ) -> pb.RankArtworkResponse:
        try:
            return self.calls.rank(request, None, grpc_context.invocation_metadata())
        except Exception as exc:
            return self._error(exc, grpc_context, pb.RankArtworkResponse())

    async def ReportOutcome(  # noqa: N802
        self, request: pb.ReportOutcomeRequest | bytes, grpc_context: RayServegRPCContext
    ) -> pb.ReportOutcomeResponse:
        try:
            return self.calls.report(request, grpc_context.invocation_metadata())
        except Exception as exc:
            return self._error(exc, grpc_context, pb.ReportOutcomeResponse())

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:  # noqa: N802
        if self.drain_flag.exists():  # `keyart up` is stopping: load balancers move away, pages still answered
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=health_status(self.runtime.page))  # type: ignore[arg-type]

    async def check_health(self) -> None:
        """Ray Serve's replica health probe: a replica that raises here is replaced.

        It raises for what only a restart fixes: a dead watcher or writer thread. Pages run
        on the loop that runs this probe, so a wedged page leaves the probe unanswered and
        Serve's own health-check timeout replaces the replica. A store that is down or a
        model that does not load is not that: the replica serves on (spool; last good model
        or default artwork with NOT_SERVING) and a restart would not help.
        """
        broken = self.runtime.broken()
        if broken:
            raise RuntimeError(broken)
        if self.runtime.writer is not None:
            ok, detail = self.runtime.writer.health()
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


def bind_app(args: dict[str, Any], start_runtime: RuntimeFactory) -> serve.Application:
    """The Serve application for validated args, with the runtime factory bound."""
    AppArgs.model_validate(args)  # fail at deploy time, with the field named, not in a replica
    return ArtworkRankerDeployment.bind(dict(args), start_runtime)  # type: ignore[attr-defined]


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
