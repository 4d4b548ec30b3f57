"""Request-path metrics, aggregated in memory and exported in the background.

Recording a page costs a few dict updates; an exporter (Ray Serve metrics in the
deployment, prometheus_client in the bare server) drains the deltas every second,
so the request path never pays for a metrics backend call per title.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from keyart.domain import Selection

PROPENSITY_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0)
LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


_PROPENSITY_LABELS = (*(str(b) for b in PROPENSITY_BUCKETS), "+Inf")


def propensity_bucket(value: float) -> str:
    """Upper bound label of the first propensity bucket holding value ("+Inf" above all),
    by bisection over labels made once (a page labels 40: 4 µs against 20 µs for a loop
    that formats each bound)."""
    if value != value:  # NaN is <= no bound: the last bucket
        return "+Inf"
    return _PROPENSITY_LABELS[bisect_left(PROPENSITY_BUCKETS, value)]


@dataclass
class MetricDeltas:
    """What happened since the last drain."""

    decisions: Counter = field(default_factory=Counter)  # (policy, explored) -> n
    fallbacks: Counter = field(default_factory=Counter)  # reason -> n
    propensity: Counter = field(default_factory=Counter)  # bucket -> n
    page_latency: list[float] = field(default_factory=list)
    feature_latency: list[float] = field(default_factory=list)
    feature_failures: int = 0
    outcomes: int = 0


class AggregatingMetrics:
    """Implements the handler's Metrics protocol with in-memory counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._d = MetricDeltas()

    def observe_page(self, policy: str, selections: list[Selection], seconds: float) -> None:
        served = [s for s in selections if not s.fallback_reason]
        explored = sum(1 for s in served if s.explored)
        buckets = Counter(propensity_bucket(s.propensity) for s in served)
        with self._lock:
            d = self._d
            if len(served) < len(selections):
                d.fallbacks.update(s.fallback_reason.split(":", 1)[0] for s in selections if s.fallback_reason)
            if explored:
                d.decisions[(policy, True)] += explored
            if len(served) > explored:
                d.decisions[(policy, False)] += len(served) - explored
            d.propensity.update(buckets)
            d.page_latency.append(seconds)

    def observe_features(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self._d.feature_latency.append(seconds)
            self._d.feature_failures += not ok

    def observe_outcomes(self, accepted: int) -> None:
        with self._lock:
            self._d.outcomes += accepted

    def drain(self) -> MetricDeltas:
        """Take and reset the deltas accumulated since the last drain."""
        with self._lock:
            d, self._d = self._d, MetricDeltas()
        return d
