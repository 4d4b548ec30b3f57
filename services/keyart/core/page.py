"""The page service: one RankArtwork page or ReportOutcome batch, on domain types.

Transports (the gRPC servicer, the Ray Serve deployment) convert protobuf to a
`PageRequest` and delegate here. The service never lets a failing dependency fail
a well-formed page: it serves default artwork with `fallback_reason` set instead,
and it logs every decision, fallbacks included (propensity 1).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from keyart.core.experiment import CURRENT_MODEL, Experiment, Shadow
from keyart.core.feature_space import FeatureSpace
from keyart.core.featurize import CatalogIndex, cold_member
from keyart.core.log_limit import LimitedLog
from keyart.core.model import QualityPlayModel
from keyart.core.ports import DecisionSink, MemberLookup, NoMetrics, PageMetrics
from keyart.core.ranker import (
    FALLBACK_DEADLINE,
    FALLBACK_FEATURES_UNAVAILABLE,
    FALLBACK_MODEL_ERROR,
    PolicyConfig,
    Ranker,
)
from keyart.domain import (
    Catalog,
    LoggedPage,
    MemberFeatures,
    Outcome,
    RequestContext,
    Selection,
    ShadowChoice,
    TitleRequest,
)

log = logging.getLogger(__name__)
limited = LimitedLog(log)  # request-path failures: one line per reason per 10 s, never a traceback

PageShadows = tuple["ShadowChoice | None", ...]  # one selection's would-be choice of each shadow

# The impression fields that differ between the decisions of a page, in `_log`'s row order.
_PER_DECISION = ("decision_id", "title_id", "image_id", "lineage_id", "propensity", "score", "explored",
                 "position", "fallback_reason", "features", "feature_schema", "actor_affinity", "shadows")


def _index_for(catalog: Catalog, model: QualityPlayModel | None, current: CatalogIndex | None) -> CatalogIndex:
    """The catalog's index in the model's feature space (the catalog's own without a model)."""
    space = (model.space if model is not None else None) or FeatureSpace.from_catalog(catalog)
    if current is not None and current.catalog is catalog and current.space == space:
        return current
    return CatalogIndex.build(catalog, space)


@dataclass(frozen=True)
class _Arm:
    """What serves (or shadows) for an experiment's cell: None index and model = the promoted pair."""

    index: CatalogIndex | None
    model: QualityPlayModel | None
    policy: PolicyConfig


@dataclass(frozen=True)
class _LiveExperiment:
    experiment: Experiment
    models: Mapping[str, QualityPlayModel]
    cells: Mapping[str, _Arm]
    shadows: tuple[tuple[Shadow, _Arm], ...]


@dataclass(frozen=True)
class PageRequest:
    """A validated RankArtwork request."""

    request_id: str
    member_id: str
    context: RequestContext
    titles: list[TitleRequest]


@dataclass(frozen=True)
class PageResult:
    """The page's selections, in page order, and what produced them."""

    selections: list[Selection]
    policy: str  # the member's policy, or "fallback" when the whole page fell back
    model_version: str
    feature_schema: str = ""  # the feature space the selections' features follow
    experiment: str = ""  # the running experiment the member is in ("" for none)
    cell: str = ""
    shadows: tuple[PageShadows, ...] = ()  # per selection, one per shadow
    latency_ms: float = 0.0


class PageService:
    """Ranks pages and takes outcomes; holds the serving model and catalog index."""

    def __init__(
        self,
        index: CatalogIndex,
        members: MemberLookup,
        policy: PolicyConfig,
        sink: DecisionSink | None = None,
        metrics: PageMetrics | None = None,
        feature_timeout_s: float = 0.05,
        request_budget_s: float = 0.15,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log_member_id: Callable[[str], str] | None = None,
        inline_features: bool = False,
    ) -> None:
        """``log_member_id``: what the decision log stores in place of a member id (a
        keyed pseudonym, :func:`keyart.core.pseudonym.keyed_pseudonym`); None keeps it.
        ``inline_features``: `members` bounds its own wait by ``feature_timeout_s`` (a
        local store with a busy timeout), so it is read on the request thread; else on
        a worker thread the page stops waiting for at the timeout."""
        self.members = members
        self.log_member_id = log_member_id
        self.policy = policy
        self.sink = sink
        self.metrics: PageMetrics = metrics or NoMetrics()
        self.feature_timeout_s = feature_timeout_s
        self.inline_features = inline_features
        self.request_budget_s = request_budget_s
        self.clock = clock
        # The catalog index in the serving model's feature space, and that model: swapped
        # together by one assignment (a new model or catalog), read once per request.
        self._serving: tuple[CatalogIndex, QualityPlayModel | None] = (index, None)
        # Impressions per image served by this process: new images get a minimum
        # exposure until they reach policy.new_image_impressions.
        self.exposure: Counter[str] = Counter()
        # One thread owns the feature client (SQLite connections are per thread), and
        # lets a hung store time out instead of holding the page.
        self._feature_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features")
        self._experiment: _LiveExperiment | None = None
        self.shadow_errors = 0  # pages whose shadows failed (the page itself was served)
        # Why no model serves although one was promoted (CURRENT and the last good model
        # would not load): pages get default artwork and health says NOT_SERVING, rather
        # than exploring uniformly as on day one, when no model was ever promoted.
        self.model_unavailable = ""

    # Model lifecycle -------------------------------------------------------------
    @property
    def index(self) -> CatalogIndex:
        return self._serving[0]

    @property
    def model(self) -> QualityPlayModel | None:
        return self._serving[1]

    def set_model(self, model: QualityPlayModel | None) -> None:
        """Serve `model`, with the catalog featurized in the space it learned with."""
        self._serving = (_index_for(self.index.catalog, model, self.index), model)
        if model is not None:
            self.model_unavailable = ""

    def set_catalog(self, catalog: Catalog) -> None:
        """Serve a new catalog (new artwork) with the current model."""
        model = self.model
        self._serving = (_index_for(catalog, model, None), model)
        live = self._experiment
        if live is not None:
            self.set_experiment(live.experiment, live.models)

    # Experiments ---------------------------------------------------------------------
    @property
    def experiment(self) -> Experiment | None:
        live = self._experiment
        return live.experiment if live is not None else None

    def set_experiment(self, experiment: Experiment | None,
                       models: Mapping[str, QualityPlayModel] | None = None) -> None:
        """Run `experiment` (None: stop it), its cells and shadows served by `models`
        (version -> loaded model; every version it names). Swapped in one assignment."""
        if experiment is None:
            self._experiment = None
            return
        models = dict(models or {})
        missing = [v for v in experiment.model_versions() if v not in models]
        if missing:
            raise ValueError(f"experiment {experiment.experiment_id}: models not loaded: {', '.join(missing)}")
        catalog = self.index.catalog

        def arm(version: str, policy: str) -> _Arm:
            config = replace(self.policy, name=policy) if policy else self.policy
            if version == CURRENT_MODEL:
                return _Arm(None, None, config)
            model = models[version]
            return _Arm(_index_for(catalog, model, self.index), model, config)

        cells = {c.name: arm(c.model, c.policy) for c in experiment.cells}
        shadows = tuple((sh, arm(sh.model, sh.policy)) for sh in experiment.shadows)
        self._experiment = _LiveExperiment(experiment, models, cells, shadows)

    @property
    def model_version(self) -> str:
        model = self.model
        return model.version if model else ""

    def ready(self) -> bool:
        """SERVING once the catalog is loaded; without a model the pages explore uniformly,
        unless a promoted model could not be loaded (`model_unavailable`)."""
        return bool(self.index.catalog.titles) and not self.model_unavailable

    # RankArtwork -------------------------------------------------------------------
    def rank(self, request: PageRequest, deadline: float | None = None, now: datetime | None = None) -> PageResult:
        """Choose one image per title of the page.

        deadline: time.monotonic() by which to answer, if the client set one; the
        server's own budget applies either way. now: the decision time (default: clock).
        """
        started = time.monotonic()
        now = now or self.clock()
        context, titles = request.context, request.titles
        budget_end = started + self.request_budget_s
        deadline = budget_end if deadline is None else min(deadline, budget_end)
        index, model = self._serving
        policy_config = self.policy
        live, cell = self._experiment, ""
        if live is not None:
            cell = live.experiment.cell_for(request.member_id).name
            arm = live.cells[cell]
            if arm.index is not None:
                index, model = arm.index, arm.model
            policy_config = arm.policy
        ranker = Ranker(index, model, policy_config, exposure=self.exposure)

        unavailable = model is None and bool(self.model_unavailable)  # default artwork: no features needed
        member = None if unavailable else self._member(request.member_id, context, deadline)
        shadows: tuple[PageShadows, ...] = ()
        if unavailable:
            policy, selections = "fallback", ranker.fallback_page(titles, FALLBACK_MODEL_ERROR, context.device)
        elif member is None:
            policy, selections = "fallback", ranker.fallback_page(titles, FALLBACK_FEATURES_UNAVAILABLE, context.device)
        elif time.monotonic() >= deadline:
            policy, selections = "fallback", ranker.fallback_page(titles, FALLBACK_DEADLINE, context.device)
        else:
            policy, selections = ranker.rank(member, context, titles, now)
            # Shadows first: they see the impressions as the served choice saw them.
            shadows = self._shadows(live, request.request_id, member, context, titles, selections, ranker) \
                if live else ()
            self.exposure.update(s.image_id for s in selections if not s.fallback_reason)
        result = PageResult(selections=selections, policy=policy, model_version=ranker.model_version,
                            feature_schema=index.space.schema_id,
                            experiment=live.experiment.experiment_id if live else "", cell=cell,
                            shadows=shadows, latency_ms=(time.monotonic() - started) * 1000.0)
        self._log(request, member, result, now)
        self.metrics.observe_page(policy, selections, time.monotonic() - started)
        return result

    def _shadows(self, live: _LiveExperiment, request_id: str, member: MemberFeatures, context: RequestContext,
                 titles: list[TitleRequest], selections: list[Selection], served_by: Ranker) -> tuple[PageShadows, ...]:
        """Per selection, each shadow's would-be choice; a failing shadow never fails the page."""
        if not live.shadows:
            return ()
        per_shadow: list[list[ShadowChoice | None]] = []
        for shadow, arm in live.shadows:
            name = shadow.name
            if not shadow.scores(request_id):  # a sampled shadow skips this page
                per_shadow.append([None] * len(selections))
                continue
            try:
                ranker = Ranker(arm.index or self.index, arm.model, arm.policy, exposure=self.exposure)
                per_shadow.append(ranker.shadow_choices(name, member, context, titles, selections, served_by))
            except Exception as exc:  # logged without the member: the served page stands
                self.shadow_errors += 1
                limited.error(f"shadow:{name}", "shadow %s failed on a page (%s: %s)", name, type(exc).__name__,
                              str(exc)[:200])
                per_shadow.append([None] * len(selections))
        return tuple(zip(*per_shadow))

    def _member(self, member_id: str, context: RequestContext, deadline: float) -> MemberFeatures | None:
        """Member features within the time left (None if the store failed or timed out).

        A member the store does not know yet gets cold-start features, not a fallback.
        """
        t0 = time.monotonic()
        timeout = max(0.0, min(self.feature_timeout_s, deadline - t0))
        try:
            if self.inline_features:  # a thread handoff costs more CPU than the read itself
                member = self.members.get(member_id)
            else:
                future = self._feature_pool.submit(self.members.get, member_id)
                member = future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            limited.warning("features_timeout", "member features timed out after %.1f ms: default artwork served",
                            timeout * 1000)
            self.metrics.observe_features(time.monotonic() - t0, ok=False)
            return None
        except Exception as exc:
            limited.error("features_unavailable", "member feature lookup failed (%s): default artwork served",
                          type(exc).__name__)
            self.metrics.observe_features(time.monotonic() - t0, ok=False)
            return None
        self.metrics.observe_features(time.monotonic() - t0, ok=True)
        return member or cold_member(member_id, context)

    def _log(self, request: PageRequest, member: MemberFeatures | None, result: PageResult, now: datetime) -> None:
        if self.sink is None:
            return
        context = request.context
        actors = tuple(member.actor_affinity.items()) if member is not None else ()
        member_id = self.log_member_id(request.member_id) if self.log_member_id else request.member_id
        shared = {
            "request_id": request.request_id, "member_id": member_id, "policy": result.policy,
            "model_version": result.model_version, "country": context.country, "language": context.language,
            "device": context.device, "surface": context.surface, "decided_at": now,
            "experiment": result.experiment, "cell": result.cell, "latency_ms": result.latency_ms,
        }
        schema, shadows = result.feature_schema, result.shadows
        rows = [
            (s.decision_id, s.title_id, s.image_id, s.lineage_id, s.propensity, s.score, s.explored, s.position,
             s.fallback_reason, s.features, schema if s.features else "", actors if s.features else (),
             tuple(c for c in shadows[k] if c is not None) if shadows else ())
            for k, s in enumerate(result.selections)
        ]
        self.sink.submit_page(LoggedPage(shared, _PER_DECISION, rows))  # never blocks: journaled or queued

    # ReportOutcome -------------------------------------------------------------------
    def report(self, outcomes: list[Outcome]) -> int:
        """Hand a validated batch of outcomes to the log; returns how many were accepted."""
        if self.sink is not None:
            if self.log_member_id is not None:
                alias = self.log_member_id
                outcomes = [replace(o, member_id=alias(o.member_id)) for o in outcomes]
            self.sink.submit_outcomes(outcomes)
        self.metrics.observe_outcomes(len(outcomes))
        return len(outcomes)

    def close(self) -> None:
        self._feature_pool.shutdown(wait=False, cancel_futures=True)
