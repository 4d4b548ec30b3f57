"""The page metrics aggregate exactly what a per-selection count would."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from keyart.core.metrics import PROPENSITY_BUCKETS, AggregatingMetrics
from keyart.domain import Selection

_PROPENSITY = st.one_of(st.sampled_from([*PROPENSITY_BUCKETS, 0.0, -0.0, 1.5, float("nan"), float("inf")]),
                        st.floats(allow_nan=True))
_SELECTION = st.builds(
    lambda p, explored, reason: Selection(title_id="t", image_id="i", lineage_id="l", propensity=p, score=0.5,
                                          explored=explored, decision_id="d", fallback_reason=reason),
    _PROPENSITY, st.booleans(), st.sampled_from(["", "", "", "unknown_image:x", "deadline_exceeded"]))


def bucket_of(value: float, bounds: tuple[float, ...]) -> str:
    """The reference: the label of the first bound the value is at most ("+Inf" above all)."""
    for b in bounds:
        if value <= b:
            return str(b)
    return "+Inf"


@settings(max_examples=300, deadline=None)
@given(st.lists(_SELECTION, max_size=50), st.sampled_from(["epsilon_greedy", "uniform"]))
def test_a_page_counts_as_each_selection_counted_alone(selections: list[Selection], policy: str) -> None:
    metrics = AggregatingMetrics()
    metrics.observe_page(policy, selections, 0.002)
    got = metrics.drain()
    decisions, fallbacks, propensity = Counter(), Counter(), Counter()
    for s in selections:  # the reference: one selection at a time
        if s.fallback_reason:
            fallbacks[s.fallback_reason.split(":", 1)[0]] += 1
        else:
            decisions[(policy, s.explored)] += 1
            propensity[bucket_of(s.propensity, PROPENSITY_BUCKETS)] += 1
    assert (got.decisions, got.fallbacks, got.propensity) == (decisions, fallbacks, propensity)
    assert got.page_latency == [0.002]
