from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from adapters.decision_log.dlog_helpers import T0, make_impression, make_outcome

from keyart.adapters.decision_log.export import SCHEMA, export_parquet, tail
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.domain import OutcomeKind

COLUMNS = [
    "decision_id", "request_id", "member_id", "title_id", "image_id", "lineage_id",
    "propensity", "score", "explored", "policy", "model_version", "position", "country",
    "language", "device", "surface", "decided_at", "fallback_reason", "feature_schema",
    "features", "top_actors", "top_actor_weights", "experiment", "cell", "shadows", "latency_ms",
    "seen", "played", "max_minutes", "first_play_time", "n_outcomes",
]  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = SqliteLogStore(tmp_path / "d.sqlite")
    yield s
    s.close()


def test_export_joins_outcome_aggregates(store, tmp_path) -> None:
    feats = np.linspace(0, 1, 60).astype("<f4").tobytes()
    store.write_impressions([make_impression(i, features=feats) for i in range(10)])
    store.write_impressions([make_impression(50, at=T0 + timedelta(hours=3))])  # out of range
    late = T0 + timedelta(hours=1, minutes=30)  # after `until`, inside the outcome window
    store.write_outcomes(
        [
            make_outcome("dec-000001", OutcomeKind.IMPRESSION_SEEN),
            make_outcome("dec-000001", OutcomeKind.PLAY_STARTED, 0.0, at=T0 + timedelta(minutes=9)),
            make_outcome("dec-000001", OutcomeKind.PLAYBACK_PROGRESS, 12.5, at=late),
            make_outcome("dec-000002", OutcomeKind.IMPRESSION_SEEN),
            make_outcome("dec-unknown", OutcomeKind.PLAY_STARTED),
        ]
    )
    out = tmp_path / "exports" / "log.parquet"
    counts = export_parquet(store, T0, T0 + timedelta(hours=1), out)
    assert counts["impressions"] == 10
    assert counts["played"] == 1 and counts["seen"] == 2 and counts["with_outcomes"] == 2
    assert counts["outcomes_scanned"] == 5 and counts["outcomes_unmatched"] == 1

    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS
    assert pq.read_schema(out).equals(SCHEMA)
    assert len(df) == 10
    row = df.set_index("decision_id").loc["dec-000001"]
    assert bool(row.played) and bool(row.seen)
    assert row.max_minutes == 12.5
    assert row.first_play_time == pd.Timestamp(T0 + timedelta(minutes=9))
    assert row.n_outcomes == 3
    assert row.features.dtype == np.float32 and len(row.features) == 60
    assert row.features.tobytes() == feats  # the logged float32 row, exactly
    assert row.feature_schema == "fs-1"
    other = df.set_index("decision_id").loc["dec-000003"]
    assert not other.played and other.max_minutes == 0.0 and pd.isna(other.first_play_time)
    assert str(df.decided_at.dtype) == "datetime64[us, UTC]"


def test_export_empty_range_writes_readable_file(store, tmp_path) -> None:
    out = tmp_path / "empty.parquet"
    counts = export_parquet(store, T0, T0 + timedelta(hours=1), out)
    assert counts["impressions"] == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS and len(df) == 0


def test_export_in_row_groups(store, tmp_path) -> None:
    store.write_impressions([make_impression(i) for i in range(250)])
    out = tmp_path / "rg.parquet"
    export_parquet(store, T0, T0 + timedelta(hours=1), out, row_group_size=100)
    assert pq.ParquetFile(out).num_row_groups == 3
    assert pd.read_parquet(out).decision_id.tolist() == [f"dec-{i:06d}" for i in range(250)]


def test_tail(store) -> None:
    store.write_impressions([make_impression(i, at=T0 - timedelta(hours=i)) for i in range(30)])
    last = tail(store, 5, until=T0 + timedelta(seconds=1))
    assert [i.decision_id for i in last] == [f"dec-{i:06d}" for i in (4, 3, 2, 1, 0)]
    assert len(tail(store, 100, until=T0 + timedelta(seconds=1))) == 30
    assert tail(store, 0) == []


def test_export_actor_affinity_columns(store, tmp_path) -> None:
    actors = (("nm0000123", 0.8125), ("nm0000456", 1 / 3), ("Zoë", 0.0))
    store.write_impressions(
        [
            make_impression(1, actor_affinity=actors),
            make_impression(2, actor_affinity=(), features=b"", fallback_reason="timeout"),
        ]
    )
    out = tmp_path / "actors.parquet"
    export_parquet(store, T0, T0 + timedelta(hours=1), out)
    schema = pq.read_schema(out)
    assert schema.field("top_actors").type == pa.list_(pa.string())
    assert schema.field("top_actor_weights").type == pa.list_(pa.float32())
    df = pd.read_parquet(out).set_index("decision_id")
    row = df.loc["dec-000001"]
    assert list(row.top_actors) == ["nm0000123", "nm0000456", "Zoë"]
    assert row.top_actor_weights.dtype == np.float32
    assert np.allclose(row.top_actor_weights, [0.8125, 1 / 3, 0.0])
    # A fallback decision carries empty lists (not nulls).
    fb = df.loc["dec-000002"]
    assert len(fb.top_actors) == 0 and len(fb.top_actor_weights) == 0
    # What offline evaluation builds from these columns (evaluate._actor_maps).
    maps = [
        {str(a): float(w) for a, w in zip(list(a_), list(w_))}
        for a_, w_ in zip(df.top_actors, df.top_actor_weights)
    ]
    assert maps[0] == {"nm0000123": 0.8125, "nm0000456": float(np.float32(1 / 3)), "Zoë": 0.0}
    assert maps[1] == {}
