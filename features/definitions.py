"""Feast definitions of keyart: entities, sources, feature views and feature services.

Data location: FileSource paths are relative to the Feast repository directory (the
directory holding feature_store.yaml); Feast joins them onto `repo_path` when it
reads. The embedded default repo (`features/`) therefore points at `../var/world`.
A repository prepared by `keyart.adapters.feast.repo.prepare_feature_repo` carries a
`keyart_paths.json` next to this file naming its own world directory (it wins);
otherwise the environment variable KEYART_FEAST_WORLD_DIR overrides the default.

Only member features live here: the ranker reads them online through the versioned
service below. Titles and images come from the validated catalog files
(`keyart world import`), held in process by the ranker; request context (device,
time) is computed per request by the featurizer.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, String

_HERE = Path(__file__).resolve().parent


def _world_dir() -> str:
    cfg = _HERE / "keyart_paths.json"
    if cfg.exists():
        return str(json.loads(cfg.read_text())["world_dir"])
    return os.environ.get("KEYART_FEAST_WORLD_DIR") or "../var/world"


WORLD_DIR = _world_dir()
MEMBER_TTL = timedelta(days=30)  # member snapshots are weekly; older than this is stale


def _source(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"{WORLD_DIR.rstrip('/')}/{name}.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


member = Entity(name="member", join_keys=["member_id"], value_type=ValueType.STRING,
                description="A streaming member.")

member_genre_affinity = FeatureView(
    name="member_genre_affinity",
    entities=[member],
    ttl=MEMBER_TTL,
    schema=[
        Field(name="genres", dtype=Array(String)),
        Field(name="genre_weights", dtype=Array(Float64)),
        Field(name="history_views", dtype=Float64),
        Field(name="history_minutes", dtype=Float64),
    ],
    source=_source("member_genre_affinity"),
    online=True,
    description="Recency-weighted share of viewing per genre (the catalog's genres, as parallel lists: "
    "the vocabulary is open), shrunk to the population's; how much history stands behind it "
    "(weekly snapshots).",
)

member_actor_affinity = FeatureView(
    name="member_actor_affinity",
    entities=[member],
    ttl=MEMBER_TTL,
    schema=[
        Field(name="top_actors", dtype=Array(String)),
        Field(name="top_actor_weights", dtype=Array(Float64)),
    ],
    source=_source("member_actor_affinity"),
    online=True,
    description="Top actors (up to 20) by share of recency-weighted viewing.",
)

member_profile = FeatureView(
    name="member_profile",
    entities=[member],
    ttl=MEMBER_TTL,
    schema=[
        Field(name="country", dtype=String),
        Field(name="language", dtype=String),
        Field(name="main_device", dtype=String),
        Field(name="tenure_days", dtype=Float64),
    ],
    source=_source("member_profile"),
    online=True,
)

member_title_interaction = FeatureView(
    name="member_title_interaction",
    entities=[member],
    ttl=MEMBER_TTL,
    schema=[Field(name="watched_titles", dtype=Array(String))],
    source=_source("member_title_interaction"),
    online=True,
    description="Titles the member watched or started.",
)

# The member features the ranker reads online, versioned: a new feature set gets a new
# service so running rankers keep reading the set they were trained on. v3 holds the
# genre shares as lists over the catalog's own genres; v1 and v2 (one column per genre
# of a fixed list) were retired with the closed vocabularies.
member_context_v3 = FeatureService(
    name="member_context_v3",
    features=[member_genre_affinity, member_actor_affinity, member_profile, member_title_interaction],
    description="Member features read online by the artwork ranker (v3: open genre vocabulary).",
)

ALL_OBJECTS: list[Any] = [
    member,
    member_genre_affinity, member_actor_affinity, member_profile, member_title_interaction,
    member_context_v3,
]
