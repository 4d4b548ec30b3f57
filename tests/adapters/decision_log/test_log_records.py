from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from adapters.decision_log.dlog_helpers import T0, f32, make_impression, make_outcome

from keyart.adapters.decision_log import records
from keyart.domain import Impression, OutcomeKind


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
    # A record's FeatureRow is stored as it is, once checked.
    assert records.encode_features(blob) is blob
    assert records.encode_features(bytearray(blob)) == blob  # a buffer is a row too, never bytes as numbers
    with pytest.raises(ValueError, match="not a float32 vector"):
        records.encode_features(b"\x00\x01\x02")


def test_json_reads_spool_lines_of_float64_features() -> None:
    """Lines spooled while records held float tuples carried float64 bytes under "features"."""
    import base64
    import json

    imp = make_impression(7, features=f32(0.1, 2.5, -3.0))
    body = json.loads(records.record_to_json(imp))
    assert base64.b64decode(body["features32"]) == imp.features and "features" not in body
    body["features"] = base64.b64encode(np.array([0.1, 2.5, -3.0], dtype="<f8").tobytes()).decode("ascii")
    del body["features32"]
    assert records.record_from_json(json.dumps(body)) == imp  # rounded to float32, as stored


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
    imp = make_impression(3, features=f32(0.1, 0.2, 1 / 3))
    assert records.record_from_json(records.record_to_json(imp)) == imp
    out = make_outcome("d1", OutcomeKind.PLAYBACK_PROGRESS, 12.5)
    assert records.record_from_json(records.record_to_json(out)) == out


def test_json_round_trip_keeps_actor_affinity() -> None:
    actors = (("nm0000123", 0.8125), ("nm0000456", 1 / 3), ("Zoë Ünicode", 0.0))
    imp = make_impression(4, actor_affinity=actors)
    line = records.record_to_json(imp)
    assert b'"actor_affinity":[["nm0000123",0.8125],' in line  # compact pairs
    back = records.record_from_json(line)
    assert back == imp and back.actor_affinity == actors
    assert isinstance(back.actor_affinity, tuple) and isinstance(back.actor_affinity[0], tuple)
    # Fallbacks carry none: () comes back as (), not [].
    empty = make_impression(5, actor_affinity=(), features=b"", fallback_reason="timeout")
    assert records.record_from_json(records.record_to_json(empty)) == empty
    # Weights straight from a feature store (numpy scalars) are written as floats.
    np_imp = make_impression(6, actor_affinity=(("a", np.float32(0.5)), ("b", np.float64(0.25))))
    assert records.record_from_json(records.record_to_json(np_imp)).actor_affinity == (
        ("a", 0.5),
        ("b", 0.25),
    )


def test_spool_line_written_before_actor_affinity_still_loads() -> None:
    imp = make_impression(7)
    body = json.loads(records.record_to_json(imp))
    del body["actor_affinity"]  # what an older writer spooled
    back = records.record_from_json(json.dumps(body).encode())
    assert back.actor_affinity == ()
    assert back == Impression(**{**imp.__dict__, "actor_affinity": ()})


def test_actor_json_helpers() -> None:
    assert records.encode_actors(()) == "[]"
    assert records.encode_actors((("a", 0.5), ("b", 1))) == '[["a",0.5],["b",1.0]]'
    assert records.decode_actors('[["a",0.5],["b",1.0]]') == (("a", 0.5), ("b", 1.0))
    assert records.decode_actors(None) == () and records.decode_actors("") == ()
    assert records.decode_actors("[]") == ()
