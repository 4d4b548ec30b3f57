"""The storage contract of the decision log, shared by the SQLite and Cassandra backends.

Semantics every backend keeps:

* impressions are upserts keyed by ``decision_id``: writing the same impression twice
  leaves one row (last write wins);
* outcomes are keyed by :func:`keyart.adapters.decision_log.records.outcome_key`; re-sending one
  is counted as a duplicate and stored once;
* an outcome whose decision is not (yet) in the log is still stored, and counted in
  ``unknown_decision``: it may belong to an impression still in flight, and dropping it
  would bias the training data;
* a backend that cannot be reached raises :class:`LogStoreUnavailable`, which the
  writer answers by spooling to disk; any other exception is a bug or bad data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from keyart.domain import Impression, Outcome
from keyart.errors import KeyartError


class LogStoreUnavailable(KeyartError, RuntimeError):
    """The backend cannot be reached now (connection refused, timeouts, no replicas)."""


@dataclass(frozen=True)
class OutcomeWriteResult:
    """What one ``write_outcomes`` call did.

    written: outcomes newly stored (unknown-decision ones included);
    duplicates: outcomes already stored (or repeated within the call), not stored again;
    unknown_decision: of ``written``, those whose decision_id has no logged impression;
    refused: outcomes not stored because their decision is unknown and already holds
    ``MAX_OUTCOMES_PER_UNKNOWN_DECISION`` (forged or wrong ids cannot fill the store).
    """

    written: int = 0
    duplicates: int = 0
    unknown_decision: int = 0
    refused: int = 0

    def __add__(self, other: OutcomeWriteResult) -> OutcomeWriteResult:
        return OutcomeWriteResult(
            self.written + other.written,
            self.duplicates + other.duplicates,
            self.unknown_decision + other.unknown_decision,
            self.refused + other.refused,
        )


# An outcome can arrive before its impression is stored (the replica's writer flushes
# every 0.2 s), so outcomes of an unknown decision are kept, up to this many each: a
# real member's page view, play start and progress reports fit well within it.
MAX_OUTCOMES_PER_UNKNOWN_DECISION = 16


@runtime_checkable
class LogStore(Protocol):
    """Durable storage of impressions and outcomes."""

    def write_impressions(self, impressions: list[Impression]) -> None:
        """Upsert impressions keyed by decision_id."""

    def write_outcomes(self, outcomes: list[Outcome]) -> OutcomeWriteResult:
        """Store outcomes once each; count duplicates and unknown decisions."""

    def scan_impressions(self, since: datetime, until: datetime) -> Iterator[Impression]:
        """Impressions with ``since <= decided_at < until``, in time order."""

    def scan_outcomes(self, since: datetime, until: datetime) -> Iterator[Outcome]:
        """Outcomes with ``since <= event_time < until``, in time order."""

    def recent_for_member(self, member_id: str, limit: int) -> list[Impression]:
        """The member's most recent impressions, newest first."""

    def ping(self) -> None:
        """Return when the backend is reachable, else raise LogStoreUnavailable."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
