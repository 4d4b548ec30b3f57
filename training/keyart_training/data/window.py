"""The decision-time window a model learned from, and the hold-out split that makes one.

A model's `meta.json` records, under `training_window`, the first and last
`decided_at` of its training rows, their count, the log source and, when `keyart
train` held out the newest share of the log, where that hold-out starts. Offline
evaluation scores a model only on decisions strictly after `decided_until`, so an
estimate is never computed on the rows the model learned from.

Older artifacts: one with only the legacy `data_from` / `data_until` fields (the same
first and last decision time, written by earlier versions) gets its window from
them; one with neither has an unknown window and is treated as in-sample on every
row (evaluation refuses it unless `--allow-in-sample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keyart_training.data.dataset import DatasetError


def utc(value: Any) -> pd.Timestamp:
    """A tz-aware UTC timestamp (naive values are taken as UTC)."""
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def decision_times(frame: pd.DataFrame) -> pd.Series:
    """`decided_at` of every row as tz-aware UTC timestamps."""
    return pd.to_datetime(frame["decided_at"], utc=True)


@dataclass(frozen=True)
class TrainingWindow:
    """First and last decision time of a model's training rows."""

    decided_from: pd.Timestamp
    decided_until: pd.Timestamp
    rows: int | None = None
    source: str = ""
    holdout_from: pd.Timestamp | None = None  # first held-out decision time (None: nothing held out)
    holdout_share: float | None = None
    holdout_rows: int | None = None
    legacy: bool = False  # read from the legacy data_from/data_until fields

    def describe(self) -> str:
        return f"[{self.decided_from.isoformat()}, {self.decided_until.isoformat()}]"

    def as_meta(self) -> dict[str, Any]:
        return {
            "decided_from": self.decided_from.isoformat(),
            "decided_until": self.decided_until.isoformat(),
            "rows": self.rows,
            "source": self.source,
            "holdout_from": None if self.holdout_from is None else self.holdout_from.isoformat(),
            "holdout_share": self.holdout_share,
            "holdout_rows": self.holdout_rows,
        }

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, source: str = "", holdout_from: pd.Timestamp | None = None,
                 holdout_share: float | None = None, holdout_rows: int | None = None) -> "TrainingWindow | None":
        """The window of the training rows `frame` (None when it is empty)."""
        if not len(frame):
            return None
        t = decision_times(frame)
        return cls(decided_from=utc(t.min()), decided_until=utc(t.max()), rows=int(len(frame)), source=source,
                   holdout_from=None if holdout_from is None else utc(holdout_from), holdout_share=holdout_share,
                   holdout_rows=holdout_rows)

    @classmethod
    def of_meta(cls, meta: dict[str, Any]) -> "TrainingWindow | None":
        """The window recorded in a model's meta.json; None when it records none."""
        w = meta.get("training_window")
        if isinstance(w, dict) and w.get("decided_until"):
            return cls(
                decided_from=utc(w["decided_from"]), decided_until=utc(w["decided_until"]),
                rows=w.get("rows"), source=str(w.get("source") or ""),
                holdout_from=None if not w.get("holdout_from") else utc(w["holdout_from"]),
                holdout_share=w.get("holdout_share"), holdout_rows=w.get("holdout_rows"),
            )
        if meta.get("data_until"):  # written before training_window existed: same meaning
            return cls(decided_from=utc(meta.get("data_from") or meta["data_until"]),
                       decided_until=utc(meta["data_until"]), rows=meta.get("rows"),
                       source=str(meta.get("source") or ""), legacy=True)
        return None


@dataclass
class HoldoutSplit:
    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_from: pd.Timestamp | None  # every training row is decided strictly before it


def holdout_split(frame: pd.DataFrame, share: float, source: str = "log") -> HoldoutSplit:
    """Hold out the newest `share` of rows by decision time.

    The cut falls between two distinct decision times, so every held-out row is decided
    strictly after every training row (rows sharing a time, e.g. the titles of one page,
    stay together; the held-out share is then slightly above `share`). `share` 0 holds
    nothing out.
    """
    if not 0.0 <= share < 1.0:
        raise DatasetError(f"--holdout-share: {share} is not in [0, 1)")
    if share == 0.0 or not len(frame):
        return HoldoutSplit(frame, frame.iloc[:0], None)
    t = decision_times(frame).to_numpy()
    ordered = np.sort(t)
    k = len(ordered) - max(1, math.ceil(len(ordered) * share))  # first held-out position
    cut = ordered[k]
    train = t < cut
    if not train.any():
        raise DatasetError(f"{source}: cannot hold out the newest {share:.0%} of decisions: every decision up to "
                           f"the cut is at {utc(cut).isoformat()}, leaving nothing older to train on")
    return HoldoutSplit(frame[train], frame[~train], utc(cut))
