"""Shared builders and fakes of the decision-log tests.

Importable as decision_log.dlog_helpers: tests/ is on pythonpath.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from keyart.adapters.decision_log.records import outcome_key
from keyart.adapters.decision_log.store import LogStoreUnavailable, OutcomeWriteResult
from keyart.domain import Impression, LoggedPage, Outcome, OutcomeKind

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def f32(*values: float) -> bytes:
    """A FeatureRow of `values` (float32, little-endian)."""
    return np.asarray(values, dtype="<f4").tobytes()


def make_impression(i: int, *, member: str = "m1", at: datetime | None = None, **kw) -> Impression:
    fields = {
        "decision_id": f"dec-{i:06d}",
        "request_id": f"req-{i // 10}",
        "member_id": member,
        "title_id": f"title-{i % 7}",
        "image_id": f"img-{i % 5}",
        "lineage_id": f"lin-{i % 5}",
        "propensity": 0.25,
        "score": 0.125,
        "explored": i % 2 == 0,
        "policy": "epsilon_greedy",
        "model_version": "m-1",
        "position": i % 40,
        "country": "US",
        "language": "en",
        "device": "TV",
        "surface": "home",
        "decided_at": at if at is not None else T0 + timedelta(seconds=i),
        "fallback_reason": "",
        "feature_schema": "fs-1",
        "features": f32(*(float(j) * 0.5 for j in range(6))),
        # Weights exact in float32, so a Cassandra round trip (list<float>) compares equal.
        "actor_affinity": ((f"actor-{i % 3}", 0.75), ("actor-x", 0.5)),
    }
    fields.update(kw)
    return Impression(**fields)


def make_outcome(
    decision_id: str,
    kind: OutcomeKind = OutcomeKind.PLAY_STARTED,
    minutes: float = 0.0,
    at: datetime | None = None,
) -> Outcome:
    return Outcome(
        decision_id=decision_id,
        member_id="m1",
        title_id="title-1",
        image_id="img-1",
        kind=kind,
        minutes_played=minutes,
        event_time=at if at is not None else T0 + timedelta(minutes=5),
    )


class FakeStore:
    """In-memory LogStore that can be switched down (raises LogStoreUnavailable)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.fail_with: Callable[[list], Exception | None] | None = None
        self.impressions: dict[str, Impression] = {}
        self.outcome_keys: set[str] = set()
        self.order: list[str] = []  # ids in the order the store received them
        self.calls: list[tuple[str, int]] = []
        self.pings = 0
        self.closed = False

    def _check(self, records: list) -> None:
        if self.down:
            raise LogStoreUnavailable("fake store is down")
        if self.fail_with is not None:
            exc = self.fail_with(records)
            if exc is not None:
                raise exc

    def write_impressions(self, impressions: list[Impression]) -> None:
        with self.lock:
            self._check(impressions)
            self.calls.append(("imp", len(impressions)))
            for imp in impressions:
                self.impressions[imp.decision_id] = imp
                self.order.append(imp.decision_id)

    def write_outcomes(self, outcomes: list[Outcome]) -> OutcomeWriteResult:
        with self.lock:
            self._check(outcomes)
            self.calls.append(("out", len(outcomes)))
            written = dup = unknown = 0
            for o in outcomes:
                key = outcome_key(o)
                self.order.append("o:" + o.decision_id)
                if key in self.outcome_keys:
                    dup += 1
                    continue
                self.outcome_keys.add(key)
                written += 1
                unknown += o.decision_id not in self.impressions
            return OutcomeWriteResult(written, dup, unknown)

    def scan_impressions(self, since: datetime, until: datetime) -> Iterator[Impression]:
        with self.lock:
            rows = sorted(self.impressions.values(), key=lambda i: (i.decided_at, i.decision_id))
        return iter([r for r in rows if since <= r.decided_at < until])

    def scan_outcomes(self, since: datetime, until: datetime) -> Iterator[Outcome]:
        return iter(())

    def recent_for_member(self, member_id: str, limit: int) -> list[Impression]:
        return []

    def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise LogStoreUnavailable("fake store is down")

    def close(self) -> None:
        self.closed = True


def check_unknown_outcomes_bounded(store) -> None:
    """Any LogStore: outcomes of an unknown decision are kept up to the limit, the rest
    refused; a known decision takes any number (a long viewing reports progress often)."""
    from keyart.adapters.decision_log.store import MAX_OUTCOMES_PER_UNKNOWN_DECISION as LIMIT

    def progress(decision_id: str) -> list[Outcome]:
        return [make_outcome(decision_id, OutcomeKind.PLAYBACK_PROGRESS, minutes=float(k),
                             at=T0 + timedelta(seconds=k)) for k in range(LIMIT + 10)]

    flood = progress("forged-1")
    assert store.write_outcomes(flood[:5]) == OutcomeWriteResult(5, 0, 5, 0)
    assert store.write_outcomes(flood[5:]) == OutcomeWriteResult(LIMIT - 5, 0, LIMIT - 5, 10)
    store.write_impressions([make_impression(1)])
    assert store.write_outcomes(progress("dec-000001")) == OutcomeWriteResult(LIMIT + 10, 0, 0, 0)


def logged_page(impressions: list[Impression]) -> LoggedPage:
    """The LoggedPage the page service would hand over for these impressions (the fields
    it sends per decision in rows, the rest from the first impression, shared)."""
    from dataclasses import fields

    from keyart.core.page import _PER_DECISION as per_row

    first = impressions[0]
    shared = {f.name: getattr(first, f.name) for f in fields(Impression) if f.name not in per_row}
    return LoggedPage(shared, per_row, [tuple(getattr(imp, n) for n in per_row) for imp in impressions])
