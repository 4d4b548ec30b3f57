"""Ray Serve metrics of the ranker: the page path's in-memory counters, exported each second.

Recording a page costs a few dict updates (`keyart.core.metrics`); this exporter
drains the deltas into Ray Serve metrics, which Prometheus scrapes as `ray_keyart_*`.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from keyart.core.metrics import LATENCY_BUCKETS_S, AggregatingMetrics
from keyart.core.ports import DecisionLog


class RayExporter:
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

    def export(self, metrics: AggregatingMetrics, model_version: str, writer: DecisionLog | None) -> None:
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
        if model_version:
            self.model.set(1, tags={"version": model_version})
        if writer is not None:
            stats = writer.stats()
            for name, gauge in self.log_gauges.items():
                gauge.set(float(stats.get(name, 0)))
