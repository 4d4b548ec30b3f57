"""The loaded world: `World` (catalog, members, viewing) and its hidden ground truth.

This module exists apart from the generator (keyart.jobs.world.synthetic) because
most of the code base only reads worlds: feature derivation, serving, training and
simulation need `World` and `load_world`, not the machinery that invents one.

`load_world` reads a world directory back as a `World`, which exposes the hidden
ground truth (`quality_play_prob`, `play_start_prob`, `sample_outcomes`).

The ground truth reads the members' LATENT columns (`latent_*` in members.parquet,
`latent_appeal` in titles.parquet, `clickbait` in images.parquet). Those columns are
never exported as features: a model has to learn the effects from the derived
features (viewing-based affinities, image attributes, request context).

Files of a world directory:

- members.parquet: member_id, country, language, main_device, tenure_days,
  latent_genre_weights (list<float> aligned with domain.GENRES),
  latent_favourite_actors (list<str>), latent_bias, latent_activity
- titles.parquet: title_id, name, genres, cast, villain_actor (nullable),
  default_image_id, runtime_minutes, latent_appeal
- images.parquet: every domain.ImageInfo field (lists for tuples) plus hidden clickbait
- viewing.parquet: member_id, title_id, event_timestamp (UTC), minutes_watched
- world.json: seed, sizes, params, now

A world imported with `keyart world import` (keyart.jobs.world.import_swap) has no
latent columns: `load_world` reads it all the same (`World.has_ground_truth` is False)
and the ground-truth methods raise `NoGroundTruth`; feature derivation does not need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.domain import DEVICES
from keyart.errors import KeyartError
from keyart.jobs.world.params import WorldParams
from keyart.jobs.world.vocab import COUNTRIES, EXPRESSIONS, GENRES, STYLES, TONES

# Hidden ground-truth columns of the synthetic world, by table.
LATENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("latent_genre_weights", "latent_favourite_actors", "latent_bias", "latent_activity"),
    "titles": ("latent_appeal",),
    "images": ("clickbait",),
}


class NoGroundTruth(KeyartError):
    """The world has no hidden ground truth (an imported catalog): outcomes cannot be simulated."""


WORLD_FILES: tuple[str, ...] = (
    "members.parquet",
    "titles.parquet",
    "images.parquet",
    "viewing.parquet",
    "world.json",
)


@dataclass
class World:
    """A loaded world: the DataFrames, the params, and the vectorized ground truth."""

    members: pd.DataFrame
    titles: pd.DataFrame
    images: pd.DataFrame
    viewing: pd.DataFrame
    params: WorldParams
    now: datetime
    seed: int = 0
    _arr: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        p = self.params
        m, t, im = self.members, self.titles, self.images
        self._member_index = pd.Index(m["member_id"].to_numpy())
        self._title_index = pd.Index(t["title_id"].to_numpy())
        self._image_index = pd.Index(im["image_id"].to_numpy())
        frames = {"members": m, "titles": t, "images": im}
        self.has_ground_truth = all(
            c in frames[name].columns for name, cols in LATENT_COLUMNS.items() for c in cols
        )
        if not self.has_ground_truth:
            return  # imported catalog: data only, no ground truth arrays
        actors = sorted(
            {a for c in t["cast"] for a in c} | {a for f in m["latent_favourite_actors"] for a in f}
        )
        actor_index = pd.Index(actors)
        a = self._arr
        a["taste"] = np.vstack(m["latent_genre_weights"].to_numpy()).astype(float)
        a["taste_max"] = a["taste"].max(axis=1)
        a["bias"] = m["latent_bias"].to_numpy(float)
        a["m_country"] = pd.Index(COUNTRIES).get_indexer(m["country"].to_numpy())
        fav = np.full((len(m), max(1, p.favourite_actors_max)), -1, dtype=np.int64)
        for i, f in enumerate(m["latent_favourite_actors"]):
            if len(f):
                fav[i, : len(f)] = actor_index.get_indexer(list(f))[: fav.shape[1]]
        a["fav"] = fav
        a["appeal"] = t["latent_appeal"].to_numpy(float)
        tg = np.zeros((len(t), len(GENRES)))
        gi = {g: k for k, g in enumerate(GENRES)}
        for i, gs in enumerate(t["genres"]):
            for g in gs:
                tg[i, gi[g]] = 1.0
        a["title_genres"] = tg
        a["i_title"] = self._title_index.get_indexer(im["title_id"].to_numpy())
        a["i_faces"] = im["num_faces"].to_numpy(np.int64)
        a["i_face_area"] = im["face_area"].to_numpy(float)
        a["i_expr"] = pd.Index(EXPRESSIONS).get_indexer(im["expression"].to_numpy())
        a["i_villain"] = im["villain_shown"].to_numpy(bool)
        a["i_group"] = im["group_size"].to_numpy(np.int64)
        a["i_bright"] = im["brightness"].to_numpy(float)
        a["i_warm"] = im["warmth"].to_numpy(float)
        a["i_tone"] = pd.Index(TONES).get_indexer(im["tone"].to_numpy())
        a["i_style"] = pd.Index(STYLES).get_indexer(im["style"].to_numpy())
        a["i_text"] = im["text_present"].to_numpy(bool)
        a["i_clickbait"] = im["clickbait"].to_numpy(bool)
        max_cast = max([len(c) for c in im["cast_shown"]] + [1])
        cast = np.full((len(im), max_cast), -2, dtype=np.int64)
        for i, c in enumerate(im["cast_shown"]):
            if len(c):
                cast[i, : len(c)] = actor_index.get_indexer(list(c))
        a["i_cast"] = cast
        a["expr_eff"] = np.array([p.expression_effects.get(e, 0.0) for e in EXPRESSIONS])
        a["dev_eff"] = np.array([p.device_offsets.get(d, 0.0) for d in DEVICES])
        a["dev_small"] = np.array([d in p.small_screen_devices for d in DEVICES])
        a["c_style"] = np.array(
            [[p.country_style_effects.get(c, {}).get(s, 0.0) for s in STYLES] for c in COUNTRIES]
        )
        a["c_bright"] = np.array([p.country_brightness_effects.get(c, 0.0) for c in COUNTRIES])
        a["c_warm"] = np.array([p.country_warmth_effects.get(c, 0.0) for c in COUNTRIES])
        # Known (member, title) pairs: anything in the viewing history.
        mi = self._member_index.get_indexer(self.viewing["member_id"].to_numpy())
        ti = self._title_index.get_indexer(self.viewing["title_id"].to_numpy())
        a["known_codes"] = np.unique(mi.astype(np.int64) * len(t) + ti)

    # -- lookups -------------------------------------------------------------------

    def _idx(self, index: pd.Index, ids: np.ndarray, what: str) -> np.ndarray:
        out = index.get_indexer(np.asarray(ids, dtype=object))
        if (out < 0).any():
            bad = np.asarray(ids)[out < 0][:3]
            raise KeyError(f"unknown {what} ids: {list(bad)}")
        return out

    def _logits(
        self,
        member_ids: np.ndarray,
        image_ids: np.ndarray,
        devices: np.ndarray,
        countries: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_ground_truth:
            raise NoGroundTruth(
                "this world has no hidden ground truth (an imported catalog): outcomes cannot be "
                "simulated; train on a decision-log export (keyart train --log-export)"
            )
        p, a = self.params, self._arr
        mi = self._idx(self._member_index, member_ids, "member")
        ii = self._idx(self._image_index, image_ids, "image")
        di = pd.Index(DEVICES).get_indexer(np.asarray(devices, dtype=object))
        if (di < 0).any():
            raise ValueError(f"unknown devices: {set(np.asarray(devices)[di < 0])}")
        if countries is None:
            ci = a["m_country"][mi]
        else:
            ci = pd.Index(COUNTRIES).get_indexer(np.asarray(countries, dtype=object))
        has_c = ci >= 0
        cc = np.where(has_c, ci, 0)
        ti = a["i_title"][ii]
        taste = a["taste"][mi]
        tmax = a["taste_max"][mi]
        known = np.isin(mi.astype(np.int64) * len(self.titles) + ti, a["known_codes"])

        genre_match = np.clip((taste * a["title_genres"][ti]).sum(axis=1) / tmax, 0.0, 1.0)
        base = (
            p.base_logit
            + a["appeal"][ti]
            + a["bias"][mi]
            + p.title_genre_match_effect * genre_match
            + a["dev_eff"][di]
            + np.where(known, p.known_title_offset, 0.0)
        )
        small = a["dev_small"][di]
        crowd = a["i_group"][ii] > p.crowd_threshold
        tone_ratio = taste[np.arange(len(mi)), a["i_tone"][ii]] / tmax
        fav = a["fav"][mi]
        cast = a["i_cast"][ii]
        fav_hit = ((fav[:, :, None] == cast[:, None, :]) & (fav[:, :, None] >= 0)).any(axis=(1, 2))
        cb = a["i_clickbait"][ii]
        art = (
            p.face_effect * (a["i_faces"][ii] > 0)
            + p.face_area_effect * a["i_face_area"][ii]
            + a["expr_eff"][a["i_expr"][ii]]
            + p.villain_effect * a["i_villain"][ii]
            + crowd * (p.crowd_penalty + p.crowd_small_screen_penalty * small)
            + p.text_small_screen_effect * (a["i_text"][ii] & small)
            + p.tone_affinity_effect * (tone_ratio - p.tone_affinity_center)
            + p.favourite_actor_effect * fav_hit
            + has_c
            * (
                a["c_style"][cc, a["i_style"][ii]]
                + a["c_bright"][cc] * (a["i_bright"][ii] - 0.5)
                + a["c_warm"][cc] * a["i_warm"][ii]
            )
            + p.clickbait_quality_effect * cb
        )
        scale = np.where(known, p.known_title_artwork_scale, 1.0)
        quality = base + scale * art
        start = quality + p.start_offset + scale * p.clickbait_start_effect * cb
        return quality, start

    # -- ground truth ----------------------------------------------------------------

    def quality_play_prob(
        self,
        member_ids: np.ndarray,
        image_ids: np.ndarray,
        devices: np.ndarray,
        countries: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(member plays >= quality_minutes | shown image on device), elementwise."""
        q, _ = self._logits(member_ids, image_ids, devices, countries)
        return 1.0 / (1.0 + np.exp(-q))

    def play_start_prob(
        self,
        member_ids: np.ndarray,
        image_ids: np.ndarray,
        devices: np.ndarray,
        countries: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(member starts a play | shown image on device); always >= quality_play_prob."""
        _, s = self._logits(member_ids, image_ids, devices, countries)
        return 1.0 / (1.0 + np.exp(-s))

    def sample_outcomes(
        self,
        member_ids: np.ndarray,
        image_ids: np.ndarray,
        devices: np.ndarray,
        rng: np.random.Generator,
        countries: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw (played, minutes): played = play started; quality play iff minutes >= threshold."""
        q, s = self._logits(member_ids, image_ids, devices, countries)
        pq, ps = 1.0 / (1.0 + np.exp(-q)), 1.0 / (1.0 + np.exp(-s))
        u = rng.random(len(pq))
        played = u < ps
        quality = u < pq  # coupled draw: quality implies played since pq <= ps
        thr = self.params.quality_minutes
        ii = self._image_index.get_indexer(np.asarray(image_ids, dtype=object))
        runtime = self.titles["runtime_minutes"].to_numpy(float)[self._arr["i_title"][ii]]
        long = np.minimum(thr + rng.exponential(30.0, len(pq)), np.maximum(runtime, thr))
        short = rng.uniform(0.5, thr - 0.01, len(pq))
        minutes = np.where(quality, long, np.where(played, short, 0.0))
        return played, minutes

    def mean_quality_by_image(self, image_ids: np.ndarray | None = None, chunk: int = 64) -> pd.Series:
        """Quality-play probability of each image averaged over all members (main device, home country)."""
        ids = self.images["image_id"].to_numpy() if image_ids is None else np.asarray(image_ids)
        mids = self.members["member_id"].to_numpy()
        devs = self.members["main_device"].to_numpy()
        out = np.empty(len(ids))
        for s in range(0, len(ids), chunk):
            block = ids[s : s + chunk]
            pr = self.quality_play_prob(
                np.tile(mids, len(block)), np.repeat(block, len(mids)), np.tile(devs, len(block))
            )
            out[s : s + chunk] = pr.reshape(len(block), len(mids)).mean(axis=1)
        return pd.Series(out, index=ids, name="mean_quality_play_prob")


def load_world(dir: Path) -> World:
    """Read a world directory (written by `build_world` or `import_world`)."""
    d = Path(dir)
    meta = json.loads((d / "world.json").read_text())

    def _lists(df: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
        for c in cols:
            if c in df.columns:
                df[c] = [list(x) if x is not None else [] for x in df[c]]
        return df

    members = _lists(pd.read_parquet(d / "members.parquet"), ("latent_genre_weights", "latent_favourite_actors"))
    titles = _lists(pd.read_parquet(d / "titles.parquet"), ("genres", "cast"))
    titles["villain_actor"] = titles["villain_actor"].astype(object).where(titles["villain_actor"].notna(), None)
    images = _lists(pd.read_parquet(d / "images.parquet"), ("cast_shown", "theme_tags"))
    viewing = pd.read_parquet(d / "viewing.parquet")
    return World(
        members=members,
        titles=titles,
        images=images,
        viewing=viewing,
        params=WorldParams.model_validate(meta["params"]),
        now=datetime.fromisoformat(meta["now"]),
        seed=int(meta["seed"]),
    )
