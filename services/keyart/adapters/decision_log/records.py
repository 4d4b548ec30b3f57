"""Encoding helpers shared by the decision-log backends, the spool and the export.

* features: records carry them as float32 little-endian bytes (`keyart.domain.FeatureRow`),
  stored as they are; float sequences (older spool lines and journal frames, tests) are
  encoded to them (float64 values rounded to the nearest float32, what the model consumes);
* time buckets (one text bucket per UTC hour) and shards (a stable hash of the
  decision id) that spread the time-ordered tables over partitions;
* the outcome dedup key, so a re-sent outcome collapses onto the stored one;
* timestamps as UTC microseconds (SQLite) and as JSON-safe dicts (the spool);
* the member's actor affinities (``tuple[tuple[str, float], ...]``) as compact JSON
  ``[["actor", weight], ...]`` (SQLite, the spool).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from keyart.domain import FEATURE_DTYPE, Impression, Outcome, OutcomeKind, ShadowChoice

# Number of shards of each hour bucket of the time-ordered tables. Readers scan every
# shard of every hour, so changing it for an existing keyspace makes older rows
# written under another count invisible to scans: treat it as part of the schema.
DEFAULT_SHARDS = 8

_F32 = np.dtype(FEATURE_DTYPE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- features -------------------------------------------------------------------------


def encode_features(features: bytes | bytearray | memoryview | Sequence[float] | np.ndarray) -> bytes:
    """Float32 little-endian bytes of the feature vector (b"" for no features); a
    FeatureRow (bytes, or a buffer of them) is taken as it is, once checked."""
    if isinstance(features, (bytes, bytearray, memoryview)):
        return feature_row(features)
    if not len(features):
        return b""
    return np.asarray(features, dtype=_F32).tobytes()


def feature_row(blob: bytes | bytearray | memoryview | None) -> bytes:
    """A stored feature blob as a record's FeatureRow (None: b"")."""
    if not blob:
        return b""
    if len(blob) % 4:
        raise ValueError(f"feature blob of {len(blob)} bytes is not a float32 vector")
    return blob if isinstance(blob, bytes) else bytes(blob)


def decode_features(blob: bytes | bytearray | memoryview | None) -> tuple[float, ...]:
    """Inverse of :func:`encode_features`; values come back as Python floats."""
    return tuple(np.frombuffer(feature_row(blob), dtype=_F32).tolist())


# --- actor affinities ---------------------------------------------------------------


def normalize_actors(actors: Any) -> tuple[tuple[str, float], ...]:
    """``((actor, weight), ...)`` with str actors and Python float weights.

    Accepts any iterable of pairs (lists from JSON, numpy weights from a feature
    store) or None (a row written before the field existed): that is ``()``.
    """
    if actors is None:
        return ()
    return tuple((str(a), float(w)) for a, w in actors)


def encode_actors(actors: Any) -> str:
    """Compact, ASCII-only JSON ``[["actor",weight],...]`` (``"[]"`` for none).

    ASCII (``\\uXXXX`` escapes) so any name, even a lone surrogate, stays encodable.
    """
    return json.dumps([[a, w] for a, w in normalize_actors(actors)], separators=(",", ":"))


def decode_actors(text: str | bytes | None) -> tuple[tuple[str, float], ...]:
    """Inverse of :func:`encode_actors`; None or empty text is ``()``."""
    if not text:
        return ()
    return normalize_actors(json.loads(text))


# --- time -------------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """UTC microseconds since the epoch (exact, integer arithmetic)."""
    delta = as_utc(moment) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


def hour_bucket(moment: datetime) -> str:
    """The UTC hour a moment falls in, as partition-key text: ``2024-05-01T13``."""
    return as_utc(moment).strftime("%Y-%m-%dT%H")


def hour_buckets(since: datetime, until: datetime) -> Iterator[str]:
    """Every hour bucket overlapping ``[since, until)``, oldest first."""
    start = as_utc(since).replace(minute=0, second=0, microsecond=0)
    end = as_utc(until)
    hour = start
    while hour < end:
        yield hour.strftime("%Y-%m-%dT%H")
        hour += timedelta(hours=1)


def shard_of(decision_id: str, shards: int = DEFAULT_SHARDS) -> int:
    """Stable shard in ``[0, shards)`` from a hash of the decision id (not Python's hash())."""
    digest = hashlib.blake2b(decision_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


# --- outcomes ---------------------------------------------------------------------------


def outcome_key(outcome: Outcome) -> str:
    """Dedup key of an outcome: same decision, kind, event time and minutes => same key.

    Event time is taken at millisecond precision (what Cassandra stores) and minutes
    at 1/1000 minute, so a client retry that re-serializes the event collapses.
    """
    millis = to_micros(outcome.event_time) // 1000
    minutes = round(float(outcome.minutes_played), 3)
    raw = f"{outcome.decision_id}|{OutcomeKind(outcome.kind).value}|{millis}|{minutes!r}"
    return hashlib.blake2b(raw.encode("utf-8"), digest_size=12).hexdigest()


# --- shadow choices -------------------------------------------------------------------

_SHADOW_FIELDS = tuple(f.name for f in fields(ShadowChoice))


def encode_shadows(shadows: tuple[ShadowChoice, ...] | list[ShadowChoice]) -> str:
    """Compact ASCII JSON, one object per shadow (``"[]"`` for none)."""
    if not shadows:
        return "[]"
    return json.dumps([{k: getattr(c, k) for k in _SHADOW_FIELDS} for c in shadows], separators=(",", ":"))


def shadows_from_objects(items: Any) -> tuple[ShadowChoice, ...]:
    """Shadow choices from decoded JSON objects (None or empty: none)."""
    if not items:
        return ()
    return tuple(ShadowChoice(**{k: item[k] for k in _SHADOW_FIELDS}) for item in items)


def decode_shadows(text: str | bytes | None) -> tuple[ShadowChoice, ...]:
    """Inverse of :func:`encode_shadows`; None or empty text (rows before the field) is ``()``."""
    return shadows_from_objects(json.loads(text)) if text else ()


# --- JSON (spool) -----------------------------------------------------------------------
# One JSON object per line, tagged "_t": "i" (impression) or "o" (outcome); datetimes
# as ISO-8601 UTC; impression features as base64 of their float32 bytes under
# "features32" (lines spooled before it hold float64 values under "features": read too).

IMPRESSION_TAG = "i"
_IMPRESSION_FIELDS = tuple(f.name for f in fields(Impression))
_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
OUTCOME_TAG = "o"


def record_to_json(record: Impression | Outcome) -> bytes:
    """One JSON line (with trailing newline) carrying a tagged record."""
    if isinstance(record, Impression):
        # Not dataclasses.asdict: it deep-copies every feature value (5x slower).
        body: dict[str, Any] = {name: getattr(record, name) for name in _IMPRESSION_FIELDS}
        body["decided_at"] = as_utc(record.decided_at).isoformat()
        # The row's own bytes, base64: 10x cheaper than JSON float lists.
        del body["features"]
        body["features32"] = base64.b64encode(encode_features(record.features)).decode("ascii")
        body["actor_affinity"] = [[a, w] for a, w in normalize_actors(record.actor_affinity)]
        body["shadows"] = [{k: getattr(c, k) for k in _SHADOW_FIELDS} for c in record.shadows]
        tag = IMPRESSION_TAG
    elif isinstance(record, Outcome):
        body = {name: getattr(record, name) for name in _OUTCOME_FIELDS}
        body["kind"] = OutcomeKind(record.kind).value
        body["event_time"] = as_utc(record.event_time).isoformat()
        tag = OUTCOME_TAG
    else:  # pragma: no cover - guarded by the writer
        raise TypeError(f"not a decision-log record: {type(record).__name__}")
    body["_t"] = tag
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode("utf-8") + b"\n"


def record_from_json(line: bytes | str) -> Impression | Outcome:
    body = json.loads(line)
    tag = body.pop("_t")
    if tag == IMPRESSION_TAG:
        body["decided_at"] = datetime.fromisoformat(body["decided_at"])
        if "features32" in body:
            body["features"] = feature_row(base64.b64decode(body.pop("features32")))
        else:  # spooled as float64 values
            body["features"] = encode_features(np.frombuffer(base64.b64decode(body.get("features", "")), dtype="<f8"))
        # Lines spooled before the field existed have no key: the default, ().
        body["actor_affinity"] = normalize_actors(body.get("actor_affinity"))
        body["shadows"] = shadows_from_objects(body.get("shadows"))
        return Impression(**body)
    if tag == OUTCOME_TAG:
        body["kind"] = OutcomeKind(body["kind"])
        body["event_time"] = datetime.fromisoformat(body["event_time"])
        return Outcome(**body)
    raise ValueError(f"unknown record tag {tag!r}")
