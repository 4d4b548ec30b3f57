from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from decision_log.dlog_helpers import T0, make_impression, make_outcome

from keyart.decision_log import records
from keyart.domain import OutcomeKind


def test_features_round_trip_float32_little_endian() -> None:
    feats = (0.5, -1.25, 3.0, 1e-3)
    blob = records.encode_features(feats)
    assert len(blob) == 16
    assert blob == np.array(feats, dtype="<f4").tobytes()
    back = records.decode_features(blob)
    assert back == tuple(float(np.float32(x)) for x in feats)
    assert records.encode_features(()) == b""
    assert records.decode_features(b"") == ()
    with pytest.raises(ValueError):
        records.decode_features(b"\x00\x01\x02")


def test_shard_is_stable_and_in_range() -> None:
    shards = {records.shard_of(f"d{i}", 8) for i in range(500)}
    assert shards == set(range(8))
    assert records.shard_of("abc") == records.shard_of("abc")


def test_hour_buckets_cover_range() -> None:
    since = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    until = datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    assert list(records.hour_buckets(since, until)) == [
        "2024-05-01T10",
        "2024-05-01T11",
        "2024-05-01T12",
    ]
    assert records.hour_bucket(datetime(2024, 5, 1, 23, 59)) == "2024-05-01T23"


def test_micros_round_trip_and_naive_is_utc() -> None:
    t = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert records.from_micros(records.to_micros(t)) == t
    assert records.to_micros(t.replace(tzinfo=None)) == records.to_micros(t)
    other_tz = t.astimezone(timezone(timedelta(hours=5)))
    assert records.to_micros(other_tz) == records.to_micros(t)


def test_outcome_key_collapses_retries_only() -> None:
    a = make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 10.0)
    b = make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 10.0)
    assert records.outcome_key(a) == records.outcome_key(b)
    assert records.outcome_key(a) != records.outcome_key(
        make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 20.0)
    )
    assert records.outcome_key(a) != records.outcome_key(
        make_outcome("d1", OutcomeKind.PLAY_STARTED, 10.0)
    )
    assert records.outcome_key(a) != records.outcome_key(
        make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 10.0, at=T0 + timedelta(minutes=9))
    )


def test_json_round_trip_is_exact() -> None:
    imp = make_impression(3, features=(0.1, 0.2, 1 / 3))
    assert records.record_from_json(records.record_to_json(imp)) == imp
    out = make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 12.5)
    assert records.record_from_json(records.record_to_json(out)) == out
