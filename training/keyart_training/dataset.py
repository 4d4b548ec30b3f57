"""Logged decisions -> labelled training matrix.

A decision is a success only when it led to a quality play (at least
`min_minutes` of playback): a short play after a flashy image is not rewarded,
so the model does not learn clickbait.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.core.featurize import FEATURE_NAMES, FEATURE_SCHEMA
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


class DatasetError(KeyartError):
    """A logged dataset cannot be used; the message names file, column and row."""


@dataclass
class LabelledData:
    x: np.ndarray  # shape (n, len(FEATURE_NAMES)), float32
    y: np.ndarray  # shape (n,), 1.0 for a quality play
    frame: pd.DataFrame  # the logged rows the matrix came from, same order


def read_logged(path: Path) -> pd.DataFrame:
    """Read an exported log (parquet file or folder) and check its columns."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable parquet dataset ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def label(frame: pd.DataFrame, min_minutes: float, source: str = "dataset") -> LabelledData:
    """Keep rows with logged features of this schema and label quality plays.

    Fallback decisions (no features) are not training rows; rows logged under
    another feature schema are refused loudly rather than mixed in.
    """
    has_features = frame["features"].map(lambda v: v is not None and len(v) > 0)
    usable = frame[has_features]
    bad = usable.index[usable["feature_schema"] != FEATURE_SCHEMA]
    if len(bad):
        row = int(bad[0])
        raise DatasetError(
            f"{source}: column feature_schema, row {row}: {usable.loc[row, 'feature_schema']!r} is not "
            f"the current schema {FEATURE_SCHEMA!r}; re-featurize from Feast's offline store"
        )
    props = usable["propensity"].to_numpy(float)
    if len(props) and not ((props > 0) & (props <= 1)).all():
        row = int(usable.index[~((props > 0) & (props <= 1))][0])
        raise DatasetError(f"{source}: column propensity, row {row}: must be in (0, 1]")
    x = np.stack(usable["features"].to_numpy()).astype(np.float32) if len(usable) else np.empty(
        (0, len(FEATURE_NAMES)), np.float32
    )
    if x.shape[1] != len(FEATURE_NAMES):
        raise DatasetError(f"{source}: column features has {x.shape[1]} values, expected {len(FEATURE_NAMES)}")
    y = (usable["max_minutes"].fillna(0.0).to_numpy(float) >= min_minutes).astype(np.float64)
    return LabelledData(x=x, y=y, frame=usable.reset_index(drop=True))
