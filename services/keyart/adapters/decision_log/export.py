"""Export the decision log for training and offline evaluation.

``export_parquet`` writes one row per impression decided in ``[since, until)``, joined
with the aggregate of its outcomes with event time in ``[since, until + outcome_window)``
(a play that starts after ``until`` still counts for a decision made before it).

Columns (Parquet / Arrow types):

==================  =========================  ==============================================
decision_id         string                     unique id of the decision (one per title shown)
request_id          string                     page request the decision belongs to
member_id           string
title_id            string
image_id            string                     the image shown
lineage_id          string                     image lineage (versions of one artwork)
propensity          float64                    probability the policy had of showing it, (0, 1]
score               float64                    predicted quality-play probability
explored            bool                       True when not the greedy choice
policy              string                     exploration policy name
model_version       string
position            int32                      row position on the page
country             string
language            string
device              string
surface             string
decided_at          timestamp[us, tz=UTC]
fallback_reason     string                     empty unless the default image was served
feature_schema      string                     id of the ordered feature-name list
features            list<float32>              model inputs of the chosen image
top_actors          list<string>               member's top actors as served (empty for fallbacks
                                               and decisions logged before this column existed)
top_actor_weights   list<float32>              their affinity weights, in the order of top_actors
experiment          string                     the online experiment the member was in ("" none)
cell                string                     the member's cell in it
shadows             string                     JSON list of the experiment's shadow choices:
                                               name, model_version, image_id, propensity,
                                               served_propensity, expected_score, served_score
latency_ms          float64                    the page's time in the service until chosen
seen                bool                       an IMPRESSION_SEEN outcome was logged
played              bool                       a PLAY_STARTED or PLAYBACK_PROGRESS outcome was logged
max_minutes         float64                    largest minutes_played over its outcomes (0 if none)
first_play_time     timestamp[us, tz=UTC]      earliest play outcome, null when not played
n_outcomes          int32                      distinct outcomes joined
==================  =========================  ==============================================
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keyart.adapters.decision_log.records import as_utc, encode_shadows
from keyart.adapters.decision_log.store import LogStore
from keyart.domain import FEATURE_DTYPE, Impression, OutcomeKind

_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("request_id", pa.string()),
        ("member_id", pa.string()),
        ("title_id", pa.string()),
        ("image_id", pa.string()),
        ("lineage_id", pa.string()),
        ("propensity", pa.float64()),
        ("score", pa.float64()),
        ("explored", pa.bool_()),
        ("policy", pa.string()),
        ("model_version", pa.string()),
        ("position", pa.int32()),
        ("country", pa.string()),
        ("language", pa.string()),
        ("device", pa.string()),
        ("surface", pa.string()),
        ("decided_at", _TS),
        ("fallback_reason", pa.string()),
        ("feature_schema", pa.string()),
        ("features", pa.list_(pa.float32())),
        ("top_actors", pa.list_(pa.string())),
        ("top_actor_weights", pa.list_(pa.float32())),
        ("experiment", pa.string()),
        ("cell", pa.string()),
        ("shadows", pa.string()),
        ("latency_ms", pa.float64()),
        ("seen", pa.bool_()),
        ("played", pa.bool_()),
        ("max_minutes", pa.float64()),
        ("first_play_time", _TS),
        ("n_outcomes", pa.int32()),
    ]
)
_PLAY_KINDS = (OutcomeKind.PLAY_STARTED, OutcomeKind.PLAYBACK_PROGRESS)
_SCALAR_FIELDS = [f.name for f in SCHEMA][:19]


@dataclass
class _Agg:
    seen: bool = False
    played: bool = False
    max_minutes: float = 0.0
    first_play_time: datetime | None = None
    n: int = 0


def export_parquet(
    store: LogStore,
    since: datetime,
    until: datetime,
    out_path: Path,
    *,
    outcome_window: timedelta = timedelta(days=1),
    row_group_size: int = 50_000,
) -> dict[str, Any]:
    """Write impressions of ``[since, until)`` with outcome aggregates to Parquet.

    Returns counts: impressions, played, seen, with_outcomes, outcomes_scanned,
    outcomes_unmatched (outcomes whose decision is not among the exported impressions),
    and the output path.
    """
    since, until = as_utc(since), as_utc(until)
    aggs: dict[str, _Agg] = {}
    outcomes_scanned = 0
    for o in store.scan_outcomes(since, until + outcome_window):
        outcomes_scanned += 1
        agg = aggs.get(o.decision_id)
        if agg is None:
            agg = aggs[o.decision_id] = _Agg()
        agg.n += 1
        kind = OutcomeKind(o.kind)
        if kind == OutcomeKind.IMPRESSION_SEEN:
            agg.seen = True
        if kind in _PLAY_KINDS:
            agg.played = True
            t = as_utc(o.event_time)
            if agg.first_play_time is None or t < agg.first_play_time:
                agg.first_play_time = t
        agg.max_minutes = max(agg.max_minutes, float(o.minutes_played))

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    counts = {"impressions": 0, "played": 0, "seen": 0, "with_outcomes": 0}
    matched = 0
    batch: list[Impression] = []
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for imp in store.scan_impressions(since, until):
            batch.append(imp)
            if len(batch) >= row_group_size:
                matched += _write_batch(writer, batch, aggs, counts)
                batch = []
        if batch or counts["impressions"] == 0:
            matched += _write_batch(writer, batch, aggs, counts)
    tmp.replace(out_path)
    result: dict[str, Any] = dict(counts)
    result.update(
        outcomes_scanned=outcomes_scanned,
        outcomes_unmatched=outcomes_scanned - matched,
        path=str(out_path),
    )
    return result


def _write_batch(
    writer: pq.ParquetWriter,
    batch: list[Impression],
    aggs: dict[str, _Agg],
    counts: dict[str, int],
) -> int:
    columns: dict[str, list[Any]] = {name: [] for name in _SCALAR_FIELDS}
    seen, played, max_minutes, first_play, n_out = [], [], [], [], []
    lengths = np.zeros(len(batch) + 1, dtype=np.int32)
    blobs: list[bytes] = []
    actors: list[list[str]] = []
    weights: list[list[float]] = []
    experiment: list[str] = []
    cell: list[str] = []
    shadows: list[str] = []
    latency: list[float] = []
    matched = 0
    for i, imp in enumerate(batch):
        for name in _SCALAR_FIELDS:
            columns[name].append(getattr(imp, name))
        columns["decided_at"][-1] = as_utc(imp.decided_at)
        blobs.append(imp.features)
        lengths[i + 1] = len(imp.features) // 4
        actors.append([str(a) for a, _ in imp.actor_affinity])
        weights.append([float(w) for _, w in imp.actor_affinity])
        experiment.append(imp.experiment)
        cell.append(imp.cell)
        shadows.append(encode_shadows(imp.shadows))
        latency.append(float(imp.latency_ms))
        agg = aggs.get(imp.decision_id) or _Agg()
        matched += agg.n
        seen.append(agg.seen)
        played.append(agg.played)
        max_minutes.append(agg.max_minutes)
        first_play.append(agg.first_play_time)
        n_out.append(agg.n)
        counts["impressions"] += 1
        counts["played"] += int(agg.played)
        counts["seen"] += int(agg.seen)
        counts["with_outcomes"] += int(agg.n > 0)
    offsets = pa.array(np.cumsum(lengths, dtype=np.int32), type=pa.int32())
    features = pa.ListArray.from_arrays(offsets, pa.array(np.frombuffer(b"".join(blobs), dtype=FEATURE_DTYPE)))
    arrays = [pa.array(columns[f.name], type=f.type) for f in list(SCHEMA)[:19]]
    arrays += [
        features,
        pa.array(actors, type=pa.list_(pa.string())),
        pa.array(weights, type=pa.list_(pa.float32())),
        pa.array(experiment, type=pa.string()),
        pa.array(cell, type=pa.string()),
        pa.array(shadows, type=pa.string()),
        pa.array(latency, type=pa.float64()),
        pa.array(seen, type=pa.bool_()),
        pa.array(played, type=pa.bool_()),
        pa.array(max_minutes, type=pa.float64()),
        pa.array(first_play, type=_TS),
        pa.array(n_out, type=pa.int32()),
    ]
    writer.write_table(pa.Table.from_arrays(arrays, schema=SCHEMA))
    return matched


def tail(store: LogStore, n: int, *, until: datetime | None = None) -> list[Impression]:
    """The last ``n`` impressions decided before ``until`` (default: now), oldest first.

    Looks back 1 hour, then 1 day, 7 days, 30 days and 365 days until it has ``n``.
    """
    if n <= 0:
        return []
    end = as_utc(until) if until is not None else datetime.now(UTC) + timedelta(minutes=5)
    last: deque[Impression] = deque(maxlen=n)
    for back in (
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=7),
        timedelta(days=30),
        timedelta(days=365),
    ):
        last.clear()
        for imp in store.scan_impressions(end - back, end):
            last.append(imp)
        if len(last) >= n:
            break
    return list(last)
