"""Feast definitions of keyart: entities, sources, feature views and feature services.

Data location: FileSource paths are relative to the Feast repository directory (the
directory holding feature_store.yaml); Feast joins them onto `repo_path` when it
reads. The embedded default repo (`features/`) therefore points at `../var/world`.
A repository prepared by `keyart.adapters.feast.repo.prepare_feature_repo` carries a
`keyart_paths.json` next to this file naming its own world directory (it wins);
otherwise the environment variable KEYART_FEAST_WORLD_DIR overrides the default.

The on-demand view `request_context` derives request-time context features (small
screen, cyclic hour, weekend) from a RequestSource; it is NOT part of the member
feature service, so online member lookups do not need request data.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float64, Int64, String

GENRES = (
    "action", "comedy", "crime", "documentary", "drama",
    "family", "horror", "romance", "scifi", "thriller",
)  # must equal keyart.domain.GENRES (checked by the tests); kept literal so that
# `feast apply` works without the keyart package on the path.

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
title = Entity(name="title", join_keys=["title_id"], value_type=ValueType.STRING,
               description="A catalog title.")
image = Entity(name="image", join_keys=["image_id"], value_type=ValueType.STRING,
               description="One artwork image of a title.")

member_genre_affinity = FeatureView(
    name="member_genre_affinity",
    entities=[member],
    ttl=MEMBER_TTL,
    schema=[Field(name=f"genre_{g}", dtype=Float64) for g in GENRES],
    source=_source("member_genre_affinity"),
    online=True,
    description="Recency-weighted share of viewing per genre (weekly snapshots).",
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
    description="Top actors by share of recency-weighted viewing.",
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

title_metadata = FeatureView(
    name="title_metadata",
    entities=[title],
    ttl=timedelta(0),  # 0: never expires
    schema=[
        Field(name="name", dtype=String),
        Field(name="genres", dtype=Array(String)),
        Field(name="cast", dtype=Array(String)),
        Field(name="villain_actor", dtype=String),
        Field(name="default_image_id", dtype=String),
        Field(name="runtime_minutes", dtype=Float64),
    ],
    source=_source("title_metadata"),
    online=True,
)

image_attributes = FeatureView(
    name="image_attributes",
    entities=[image],
    ttl=timedelta(0),
    schema=[
        Field(name="title_id", dtype=String),
        Field(name="lineage_id", dtype=String),
        Field(name="num_faces", dtype=Int64),
        Field(name="face_area", dtype=Float64),
        Field(name="expression", dtype=String),
        Field(name="villain_shown", dtype=Bool),
        Field(name="cast_shown", dtype=Array(String)),
        Field(name="group_size", dtype=Int64),
        Field(name="brightness", dtype=Float64),
        Field(name="warmth", dtype=Float64),
        Field(name="contrast", dtype=Float64),
        Field(name="tone", dtype=String),
        Field(name="style", dtype=String),
        Field(name="palette", dtype=String),
        Field(name="text_present", dtype=Bool),
        Field(name="theme_tags", dtype=Array(String)),
        Field(name="active", dtype=Bool),
    ],
    source=_source("image_attributes"),
    online=True,
    description="Artwork analysis attributes (the ground-truth clickbait flag is never here).",
)

request_context_source = RequestSource(
    name="request_context",
    schema=[
        Field(name="device", dtype=String),
        Field(name="hour", dtype=Int64),
        Field(name="weekday", dtype=Int64),
    ],
)

@on_demand_feature_view(
    sources=[request_context_source],
    schema=[
        Field(name="is_small_screen", dtype=Int64),
        Field(name="hour_sin", dtype=Float64),
        Field(name="hour_cos", dtype=Float64),
        Field(name="is_weekend", dtype=Int64),
    ],
    mode="python",
)
def request_context_features(inputs: dict[str, Any]) -> dict[str, Any]:
    """Request-time context: small screen flag, cyclic hour of day, weekend flag.

    Feast serializes this function's source and runs it without this module's globals:
    everything it uses is imported or defined inside it.
    """
    import math

    small_screens = ("MOBILE", "TABLET")
    hours = inputs["hour"]
    return {
        "is_small_screen": [int(d in small_screens) for d in inputs["device"]],
        "hour_sin": [math.sin(2 * math.pi * h / 24.0) for h in hours],
        "hour_cos": [math.cos(2 * math.pi * h / 24.0) for h in hours],
        "is_weekend": [int(w >= 5) for w in inputs["weekday"]],
    }


# The member features the ranker reads online, versioned: a new feature set gets a new
# service (member_context_v2) so running rankers keep reading the set they were trained on.
member_context_v1 = FeatureService(
    name="member_context_v1",
    features=[member_genre_affinity, member_actor_affinity, member_profile, member_title_interaction],
    description="Member features read online by the artwork ranker (v1).",
)

ALL_OBJECTS: list[Any] = [
    member, title, image,
    member_genre_affinity, member_actor_affinity, member_profile, member_title_interaction,
    title_metadata, image_attributes,
    request_context_features,
    member_context_v1,
]
