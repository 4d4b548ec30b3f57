"""Logged decisions -> labelled training matrix.

A decision is a success only when it led to a quality play: a play reaching
`min_minutes` of playback, started within `attribution_window` of the decision. A
short play after a flashy image is not rewarded, so the model does not learn
clickbait.

Sources (all end as a DataFrame in the export schema of
`keyart.adapters.decision_log.export`):

* `read_logged(path)`: a parquet file or folder written by `keyart log export`
  (or `simulate`);
* `read_log_store(settings, since, until)`: the configured log store directly (it is
  exported to a temporary parquet file with the same code `keyart log export` uses).

Features are taken as logged at decision time (`features`, `feature_schema`). Rows
logged without features (an older service) or under another feature schema can be
re-featurized point-in-time from Feast's offline store with `refeaturize`.

Attribution: the export keeps per decision the largest `max_minutes` over its
outcomes and `first_play_time`. With an attribution window, a decision is a
success iff `max_minutes >= min_minutes` and the first play started within the
window after `decided_at` (the export already bounds outcomes to `until +
outcome_window`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from keyart.core.feature_space import FeatureSpace, translate_context
from keyart.core.featurize import CatalogIndex, build_matrix, candidate_rows, cold_member
from keyart.domain import MemberFeatures, RequestContext
from keyart.errors import KeyartError

REQUIRED_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "member_id",
    "title_id",
    "image_id",
    "propensity",
    "policy",
    "decided_at",
    "feature_schema",
    "features",
    "max_minutes",
)

# entity rows (member_id, event_timestamp) -> member features as of each row's time
HistoricalLookup = Callable[[pd.DataFrame], list[MemberFeatures | None]]


class DatasetError(KeyartError):
    """A logged dataset cannot be used; the message names file, column and row."""


@dataclass
class LabelledData:
    x: np.ndarray  # shape (n, len(space.names)), float32
    y: np.ndarray  # shape (n,), 1.0 for a quality play
    frame: pd.DataFrame  # the logged rows the matrix came from, same order
    space: FeatureSpace  # the columns of x
    started: np.ndarray | None = None  # shape (n,), 1.0 where a play started (None: not logged)


def read_parquet_columns(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a parquet file or folder that must hold `required` columns (errors name the file)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable parquet dataset ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def read_logged(path: Path) -> pd.DataFrame:
    """Read an exported log (parquet file or folder) and check its columns and values."""
    df = read_parquet_columns(path, REQUIRED_COLUMNS)
    check_values(df, str(path))
    return df


def check_values(df: pd.DataFrame, source: str) -> None:
    """Refuse values no estimator or trainer can use, naming column and row."""
    try:
        prop = pd.to_numeric(df["propensity"], errors="raise").to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{source}: column propensity: not numeric ({exc})") from exc
    bad = ~((prop > 0) & (prop <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{source}: column propensity, row {row}: {float(prop[row])} is not in (0, 1]")
    try:
        minutes = pd.to_numeric(df["max_minutes"], errors="raise").to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{source}: column max_minutes: not numeric ({exc})") from exc
    bad = minutes < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{source}: column max_minutes, row {row}: negative ({float(minutes[row])})")
    try:
        decided = pd.to_datetime(df["decided_at"], utc=True)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{source}: column decided_at: not a timestamp ({exc})") from exc
    if decided.isna().any():
        row = int(np.flatnonzero(decided.isna().to_numpy())[0])
        raise DatasetError(f"{source}: column decided_at, row {row}: missing")


def read_log_store(settings, since: datetime, until: datetime, outcome_window: timedelta = timedelta(days=1),
                   out: Path | None = None) -> pd.DataFrame:
    """Impressions of [since, until) with their outcomes, read from the configured log store."""
    import tempfile

    from keyart.adapters.decision_log.export import export_parquet
    from keyart.adapters.decision_log.factory import open_log_store

    store = open_log_store(settings)
    try:
        if out is None:
            tmp = tempfile.mkdtemp(prefix="keyart-export-")
            out = Path(tmp) / "log.parquet"
        export_parquet(store, since, until, out, outcome_window=outcome_window)
    finally:
        store.close()
    return read_logged(out)


def _has_features(frame: pd.DataFrame) -> pd.Series:
    return frame["features"].map(lambda v: v is not None and len(v) > 0)


def refeaturize(
    frame: pd.DataFrame,
    index: CatalogIndex,
    lookup: HistoricalLookup,
    progress: bool = False,
) -> pd.DataFrame:
    """Fill `features` of rows logged without them (or under another schema).

    Member features come from `lookup` (Feast's offline store) as of `decided_at`,
    i.e. what the online store could serve then; the request context from the row's
    country, device and decided_at. Fallback decisions (default image served,
    `fallback_reason` set) stay without features: they are not model decisions.
    """
    out = frame.copy()
    fallback = out["fallback_reason"].fillna("").astype(str).ne("") if "fallback_reason" in out else False
    schema = index.space.schema_id
    need = (~_has_features(out) | (out["feature_schema"] != schema)) & ~fallback
    need &= out["image_id"].isin(index.image_row.keys())
    rows = np.flatnonzero(need.to_numpy())
    if not len(rows):
        return out
    sub = out.iloc[rows]
    entity = pd.DataFrame({"member_id": sub["member_id"].astype(str).to_numpy(),
                           "event_timestamp": pd.to_datetime(sub["decided_at"], utc=True).to_numpy()})
    members = lookup(entity)
    feats = list(out["features"])
    schemas = list(out["feature_schema"])
    for k, (i, r) in enumerate(tqdm(list(zip(rows, sub.to_dict("records"))), desc="re-featurizing",
                                    disable=not progress)):
        when = pd.Timestamp(r["decided_at"]).to_pydatetime()
        ctx = RequestContext(country=str(r.get("country") or ""), language=str(r.get("language") or ""),
                             device=str(r.get("device") or ""), surface=str(r.get("surface") or ""),
                             client_time=when)
        member = members[k] or cold_member(str(r["member_id"]), ctx)
        x = build_matrix(index, member, ctx, [str(r["title_id"])],
                         np.array([index.image_row[r["image_id"]]]), np.array([0]))
        feats[i] = x[0]
        schemas[i] = schema
    out["features"] = feats
    out["feature_schema"] = schemas
    return out


def logged_actor_maps(frame: pd.DataFrame) -> list[dict[str, float]] | None:
    """Per row, the member's top actors as served (None when the log has no such columns)."""
    if "top_actors" not in frame.columns or "top_actor_weights" not in frame.columns:
        return None
    return [
        {str(a): float(w) for a, w in zip(list(actors if actors is not None else []),
                                           list(weights if weights is not None else []))}
        for actors, weights in zip(frame["top_actors"], frame["top_actor_weights"])
    ]


def align_features(frame: pd.DataFrame, index: CatalogIndex, known: dict[str, FeatureSpace]) -> pd.DataFrame:
    """Rows logged under another known feature space, rebuilt in `index.space`.

    Context columns (member, request, title) are translated by name and category value
    (`translate_context`: a column the old space lacked is NaN); image columns and
    crosses are rebuilt from the catalog with the logged top actors. Rows of an unknown
    space, or whose image left the catalog, are left as they are (`label` refuses them
    by name).
    """
    target = index.space.schema_id
    if "feature_schema" not in frame.columns or frame.empty:
        return frame
    schemas = frame["feature_schema"].astype(str)
    has = _has_features(frame)
    foreign = has & schemas.ne(target) & schemas.isin(list(known)) & frame["image_id"].isin(index.image_row.keys())
    if not foreign.any():
        return frame
    out = frame.copy()
    feats = list(out["features"])
    new_schemas = list(schemas)
    actors = logged_actor_maps(out)
    for schema in sorted(set(schemas[foreign])):
        rows = np.flatnonzero((foreign & schemas.eq(schema)).to_numpy())
        src = known[schema]
        logged = np.stack([np.asarray(feats[i], dtype=np.float32) for i in rows])
        if logged.shape[1] != len(src.names):
            continue  # not that space's vectors after all: label() names the row
        ctx = translate_context(logged, src, index.space)
        image_rows = np.array([index.image_row[out["image_id"].iat[i]] for i in rows], dtype=np.int64)
        x = candidate_rows(index, ctx, np.arange(len(rows)), image_rows,
                           None if actors is None else [actors[i] for i in rows])
        for k, i in enumerate(rows):
            feats[i] = x[k]
            new_schemas[i] = target
    out["features"] = feats
    out["feature_schema"] = new_schemas
    return out


def quality_labels(
    frame: pd.DataFrame, min_minutes: float, attribution_window: timedelta | None = None
) -> np.ndarray:
    """1.0 where the decision led to a quality play (>= min_minutes, within the window)."""
    minutes = frame["max_minutes"].fillna(0.0).to_numpy(float)
    y = minutes >= min_minutes
    if attribution_window is not None and "first_play_time" in frame.columns:
        first = pd.to_datetime(frame["first_play_time"], utc=True)
        decided = pd.to_datetime(frame["decided_at"], utc=True)
        delay = (first - decided).to_numpy()
        within = ~pd.isna(delay) & (delay <= np.timedelta64(attribution_window))
        y &= np.asarray(within, dtype=bool)
    return y.astype(np.float64)


def start_labels(frame: pd.DataFrame, quality: np.ndarray,
                 attribution_window: timedelta | None = None) -> np.ndarray:
    """1.0 where the decision led to a play at all (every quality play did), within the window."""
    started = frame["max_minutes"].fillna(0.0).to_numpy(float) > 0
    if "played" in frame.columns:
        started |= frame["played"].fillna(False).astype(bool).to_numpy()
    if attribution_window is not None and "first_play_time" in frame.columns:
        delay = (pd.to_datetime(frame["first_play_time"], utc=True)
                 - pd.to_datetime(frame["decided_at"], utc=True)).to_numpy()
        started &= np.asarray(~pd.isna(delay) & (delay <= np.timedelta64(attribution_window)), dtype=bool)
    return np.maximum(started.astype(np.float64), quality)


def label(
    frame: pd.DataFrame,
    min_minutes: float,
    space: FeatureSpace,
    source: str = "dataset",
    attribution_window: timedelta | None = None,
) -> LabelledData:
    """Keep rows with logged features of `space` and label quality plays.

    Fallback decisions (no features) are not training rows; rows logged under
    another feature schema are refused loudly rather than mixed in (re-featurize
    them first with `refeaturize`).
    """
    has_features = _has_features(frame)
    usable = frame[has_features]
    bad = usable.index[usable["feature_schema"] != space.schema_id]
    if len(bad):
        row = int(bad[0])
        raise DatasetError(
            f"{source}: column feature_schema, row {row}: {usable.loc[row, 'feature_schema']!r} is not "
            f"the current schema {space.schema_id!r}; re-featurize from Feast's offline store"
        )
    props = usable["propensity"].to_numpy(float)
    if len(props) and not ((props > 0) & (props <= 1)).all():
        row = int(usable.index[~((props > 0) & (props <= 1))][0])
        raise DatasetError(f"{source}: column propensity, row {row}: must be in (0, 1]")
    lengths = usable["features"].map(len).to_numpy()
    wrong = np.flatnonzero(lengths != len(space.names))
    if len(wrong):
        row = int(usable.index[wrong[0]])
        raise DatasetError(f"{source}: column features, row {row}: has {lengths[wrong[0]]} values, "
                           f"expected {len(space.names)}")
    x = np.stack(usable["features"].to_numpy()).astype(np.float32) if len(usable) else np.empty(
        (0, len(space.names)), np.float32
    )
    y = quality_labels(usable, min_minutes, attribution_window)
    return LabelledData(x=x, y=y, frame=usable.reset_index(drop=True), space=space,
                        started=start_labels(usable, y, attribution_window))
