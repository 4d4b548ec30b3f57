"""The ArtworkRanker service logic, transport-agnostic.

Both the Ray Serve deployment and the bare grpc.aio server delegate here: they
pass the protobuf request and a deadline, and map KeyartError to a status. The
handler never lets a failing dependency fail a well-formed page: it serves
default artwork with `fallback_reason` set instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Protocol

from keyart.adapters.grpc import convert
from keyart.core.featurize import FEATURE_SCHEMA, CatalogIndex, cold_member
from keyart.core.model import QualityPlayModel
from keyart.core.ranker import (
    FALLBACK_DEADLINE,
    FALLBACK_FEATURES_UNAVAILABLE,
    PolicyConfig,
    Ranker,
)
from keyart.domain import Impression, MemberFeatures, Outcome, RequestContext, Selection
from keyart.v1 import ranking_pb2 as pb

log = logging.getLogger(__name__)


class MemberLookup(Protocol):
    def get(self, member_id: str) -> MemberFeatures | None: ...


class DecisionSink(Protocol):
    def submit_impressions(self, records: list[Impression]) -> bool: ...
    def submit_outcomes(self, records: list[Outcome]) -> bool: ...


class Metrics(Protocol):
    def observe_page(self, policy: str, selections: list[Selection], seconds: float) -> None: ...
    def observe_features(self, seconds: float, ok: bool) -> None: ...
    def observe_outcomes(self, accepted: int) -> None: ...


class NoMetrics:
    def observe_page(self, policy: str, selections: list[Selection], seconds: float) -> None:
        pass

    def observe_features(self, seconds: float, ok: bool) -> None:
        pass

    def observe_outcomes(self, accepted: int) -> None:
        pass


class ArtworkRankerHandler:
    """RankArtwork and ReportOutcome on plain protobuf messages."""

    def __init__(
        self,
        index: CatalogIndex,
        members: MemberLookup,
        policy: PolicyConfig,
        sink: DecisionSink | None = None,
        metrics: Metrics | None = None,
        feature_timeout_s: float = 0.05,
        request_budget_s: float = 0.15,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.index = index
        self.members = members
        self.policy = policy
        self.sink = sink
        self.metrics = metrics or NoMetrics()
        self.feature_timeout_s = feature_timeout_s
        self.request_budget_s = request_budget_s
        self.clock = clock
        # Swapped by a single assignment when a new model is promoted: a request reads it once.
        self.model: QualityPlayModel | None = None
        # Impressions per image served by this process: new images get a minimum
        # exposure until they reach policy.new_image_impressions.
        self.exposure: Counter[str] = Counter()
        # One thread owns the feature client (SQLite connections are per thread), and
        # lets a hung store time out instead of holding the page.
        self._feature_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features")

    # Model lifecycle -------------------------------------------------------------
    def set_model(self, model: QualityPlayModel | None) -> None:
        self.model = model

    @property
    def model_version(self) -> str:
        model = self.model
        return model.version if model else ""

    def ready(self) -> bool:
        """SERVING once a model and the catalog are loaded."""
        return self.model is not None and bool(self.index.catalog.titles)

    # RankArtwork -------------------------------------------------------------------
    def rank(self, request: pb.RankArtworkRequest, deadline: float | None = None) -> pb.RankArtworkResponse:
        """Answer a page. deadline: time.monotonic() by which to answer, if the client set one.

        Raises:
            InvalidRequest: the request is structurally wrong.
        """
        started = time.monotonic()
        now = self.clock()
        member_id, context, titles = convert.parse_rank_request(request, now)
        budget_end = started + self.request_budget_s
        deadline = budget_end if deadline is None else min(deadline, budget_end)
        ranker = Ranker(self.index, self.model, self.policy, exposure=self.exposure.__getitem__)

        member = self._member(member_id, context, deadline)
        if member is None:
            policy, selections = "fallback", ranker.fallback_page(titles, FALLBACK_FEATURES_UNAVAILABLE, context.device)
        elif time.monotonic() >= deadline:
            policy, selections = "fallback", ranker.fallback_page(titles, FALLBACK_DEADLINE, context.device)
        else:
            policy, selections = ranker.rank(member, context, titles, now)
            self.exposure.update(s.image_id for s in selections if not s.fallback_reason)
        actors = tuple(member.actor_affinity.items()) if member is not None else ()
        self._log(request.request_id, member_id, context, policy, ranker.model_version, selections, now, actors)
        self.metrics.observe_page(policy, selections, time.monotonic() - started)
        return convert.to_response(selections, ranker.model_version, policy)

    def _member(self, member_id: str, context: RequestContext, deadline: float) -> MemberFeatures | None:
        """Member features within the time left (None if the store failed or timed out).

        A member the store does not know yet gets cold-start features, not a fallback.
        """
        t0 = time.monotonic()
        timeout = max(0.0, min(self.feature_timeout_s, deadline - t0))
        future = self._feature_pool.submit(self.members.get, member_id)
        try:
            member = future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            log.warning("member features timed out after %.1f ms", timeout * 1000)
            self.metrics.observe_features(time.monotonic() - t0, ok=False)
            return None
        except Exception:
            log.exception("member feature lookup failed")
            self.metrics.observe_features(time.monotonic() - t0, ok=False)
            return None
        self.metrics.observe_features(time.monotonic() - t0, ok=True)
        return member or cold_member(member_id, context)

    def _log(
        self,
        request_id: str,
        member_id: str,
        context: RequestContext,
        policy: str,
        model_version: str,
        selections: list[Selection],
        now: datetime,
        actors: tuple[tuple[str, float], ...],
    ) -> None:
        if self.sink is None:
            return
        records = [
            Impression(
                decision_id=s.decision_id,
                request_id=request_id,
                member_id=member_id,
                title_id=s.title_id,
                image_id=s.image_id,
                lineage_id=s.lineage_id,
                propensity=s.propensity,
                score=s.score,
                explored=s.explored,
                policy=policy,
                model_version=model_version,
                position=s.position,
                country=context.country,
                language=context.language,
                device=context.device,
                surface=context.surface,
                decided_at=now,
                fallback_reason=s.fallback_reason,
                feature_schema=FEATURE_SCHEMA if s.features else "",
                features=s.features,
                actor_affinity=actors if s.features else (),
            )
            for s in selections
        ]
        self.sink.submit_impressions(records)  # never blocks: a queue feeds the writer

    # ReportOutcome -------------------------------------------------------------------
    def report(self, request: pb.ReportOutcomeRequest) -> pb.ReportOutcomeResponse:
        """Validate a batch of outcomes and hand it to the log.

        Raises:
            InvalidRequest: an outcome is malformed (the whole batch is refused, nothing half-taken).
        """
        outcomes = convert.parse_outcomes(request, self.clock())
        if self.sink is not None:
            self.sink.submit_outcomes(outcomes)
        self.metrics.observe_outcomes(len(outcomes))
        return pb.ReportOutcomeResponse(accepted=len(outcomes))

    def close(self) -> None:
        self._feature_pool.shutdown(wait=False, cancel_futures=True)
