"""Point-in-time member features read straight from the Feast source tables.

Feast's file offline store (dask) has a large fixed cost per call (tens of seconds
on a busy machine), which dominates simulations. `parquet_lookup` performs the same
point-in-time join on the same parquet sources the Feast feature views read
(`keyart.jobs.world.features`): per member and table, the latest row whose `created` is
at or before the entity's timestamp (what the online store could serve then) and
whose `event_timestamp` is within the views' TTL. `keyart.adapters.feast.online.historical_member_lookup`
(Feast itself) stays the reference and is what `refeaturize` uses by default.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.adapters.feast.online import row_to_member_features
from keyart.domain import MemberFeatures

MEMBER_TABLES: tuple[str, ...] = (
    "member_genre_affinity",
    "member_actor_affinity",
    "member_profile",
    "member_title_interaction",
)
MEMBER_TTL = timedelta(days=30)


def parquet_lookup(world_dir: Path, ttl: timedelta = MEMBER_TTL):
    """entity rows (member_id, event_timestamp) -> MemberFeatures | None, point-in-time."""
    tables = {}
    for name in MEMBER_TABLES:
        df = pd.read_parquet(Path(world_dir) / f"{name}.parquet")
        df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
        df["created"] = pd.to_datetime(df["created"], utc=True)
        tables[name] = df.sort_values("created", kind="stable").reset_index(drop=True)

    def lookup(entity: pd.DataFrame) -> list[MemberFeatures | None]:
        ent = pd.DataFrame({"member_id": entity["member_id"].astype(str).to_numpy(),
                            "ts": pd.to_datetime(entity["event_timestamp"], utc=True).to_numpy(),
                            "row": np.arange(len(entity))})
        ent["ts"] = pd.to_datetime(ent["ts"], utc=True)
        ent = ent.sort_values("ts", kind="stable")
        merged = ent
        for name, df in tables.items():
            right = df.rename(columns={"event_timestamp": f"__event_{name}"})
            merged = pd.merge_asof(merged.sort_values("ts", kind="stable"), right, left_on="ts",
                                   right_on="created", by="member_id", direction="backward")
            stale = (merged["ts"] - merged[f"__event_{name}"]) > pd.Timedelta(ttl)
            cols = [c for c in df.columns if c not in ("member_id", "event_timestamp", "created")]
            for c in cols:
                merged.loc[stale, c] = None
            merged = merged.drop(columns=["created", f"__event_{name}"])
        merged = merged.sort_values("row").reset_index(drop=True)
        return [row_to_member_features(m, r) for m, r in zip(merged["member_id"], merged.to_dict("records"))]

    return lookup
