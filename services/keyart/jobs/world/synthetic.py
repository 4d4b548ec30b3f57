"""Synthetic world: members with latent tastes, titles, artwork pools and viewing history.

`build_world` writes a deterministic world (for a seed) as parquet files plus
`world.json`; `load_world` reads it back as a `World`, which exposes the hidden
ground truth (`quality_play_prob`, `play_start_prob`, `sample_outcomes`).

The ground truth reads the members' LATENT columns (`latent_*` in members.parquet,
`latent_appeal` in titles.parquet, `clickbait` in images.parquet). Those columns are
never exported as features: a model has to learn the effects from the derived
features (viewing-based affinities, image attributes, request context).

Files written to `out_dir`:

- members.parquet: member_id, country, language, main_device, tenure_days,
  latent_genre_weights (list<float> aligned with domain.GENRES),
  latent_favourite_actors (list<str>), latent_bias, latent_activity
- titles.parquet: title_id, name, genres, cast, villain_actor (nullable),
  default_image_id, runtime_minutes, latent_appeal
- images.parquet: every domain.ImageInfo field (lists for tuples) plus hidden clickbait
- viewing.parquet: member_id, title_id, event_timestamp (UTC), minutes_watched
- world.json: seed, sizes, params, now

A world imported with `keyart world import` (keyart.jobs.world.importer) has no latent
columns: `load_world` reads it all the same (`World.has_ground_truth` is False) and
the ground-truth methods raise `NoGroundTruth`; feature derivation does not need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.domain import COUNTRIES, DEVICES, EXPRESSIONS, GENRES, PALETTES, STYLES, TONES
from keyart.errors import KeyartError
from keyart.jobs.world.params import WorldParams

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

_COUNTRY_P = np.array([0.30, 0.08, 0.12, 0.10, 0.08, 0.07, 0.07, 0.08, 0.05, 0.05])
_LANG = {
    "US": ("en",),
    "GB": ("en",),
    "BR": ("pt",),
    "IN": ("hi", "en"),
    "JP": ("ja",),
    "DE": ("de",),
    "FR": ("fr",),
    "MX": ("es",),
    "KR": ("ko",),
    "ES": ("es",),
}
_DEVICE_P = np.array([0.40, 0.15, 0.35, 0.10])
_GENRE_POP = np.array([1.3, 1.2, 1.0, 0.5, 1.4, 0.7, 0.6, 0.9, 0.8, 1.1])
_STYLE_P = np.array([0.25, 0.25, 0.20, 0.15, 0.15])
_WARM_PALETTES = ("red", "orange", "yellow")
_COOL_PALETTES = ("green", "teal", "blue", "purple")
_THEMES = (
    "chase", "kiss", "explosion", "family", "night", "city", "nature", "weapon",
    "dialogue", "portrait", "party", "school", "space", "monster", "court",
)
_ADJ = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Lost", "Wild",
    "Frozen", "Electric", "Secret", "Burning", "Distant", "Little", "Iron", "Paper", "Velvet",
)
_NOUN = (
    "Harbor", "Kingdom", "Signal", "Garden", "Empire", "Promise", "River", "Circuit", "Mirror",
    "Summer", "Witness", "Frontier", "Orchard", "Echo", "Voyage", "Letters", "Storm", "Tide",
)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _default_now() -> datetime:
    n = datetime.now(UTC)
    return n.replace(hour=0, minute=0, second=0, microsecond=0)


# ----------------------------------------------------------------------------- World


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


# ----------------------------------------------------------------------------- build


def _gen_members(rng: np.random.Generator, n: int, actors: list[str], actor_pop: np.ndarray,
                 p: WorldParams) -> pd.DataFrame:
    countries = rng.choice(np.array(COUNTRIES), size=n, p=_COUNTRY_P)
    languages = np.array([_LANG[c][rng.integers(len(_LANG[c]))] for c in countries])
    devices = rng.choice(np.array(DEVICES), size=n, p=_DEVICE_P)
    tenure = np.round(rng.exponential(600.0, size=n) + 1.0, 1)
    taste = rng.dirichlet(np.full(len(GENRES), p.genre_concentration), size=n)
    pop = actor_pop / actor_pop.sum()
    favs = []
    for _ in range(n):
        k = int(rng.integers(1, p.favourite_actors_max + 1)) if p.favourite_actors_max else 0
        favs.append(list(rng.choice(np.array(actors), size=k, replace=False, p=pop)) if k else [])
    return pd.DataFrame(
        {
            "member_id": [f"m{i:05d}" for i in range(1, n + 1)],
            "country": countries,
            "language": languages,
            "main_device": devices,
            "tenure_days": tenure,
            "latent_genre_weights": [list(map(float, r)) for r in taste],
            "latent_favourite_actors": favs,
            "latent_bias": rng.normal(0.0, p.member_bias_sd, size=n),
            "latent_activity": rng.gamma(2.0, 0.5, size=n),
        }
    )


def _gen_titles(rng: np.random.Generator, n: int, actors: list[str], actor_pop: np.ndarray,
                p: WorldParams) -> pd.DataFrame:
    gpop = _GENRE_POP / _GENRE_POP.sum()
    apop = actor_pop / actor_pop.sum()
    rows = []
    for i in range(1, n + 1):
        ng = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        genres = [str(g) for g in rng.choice(np.array(GENRES), size=ng, replace=False, p=gpop)]
        nc = int(rng.integers(4, 9))
        cast = [str(a) for a in rng.choice(np.array(actors), size=nc, replace=False, p=apop)]
        villain = str(cast[int(rng.integers(1, nc))]) if rng.random() < p.villain_title_share else None
        series = rng.random() < 0.4
        runtime = float(rng.integers(22, 61) if series else rng.integers(85, 161))
        name = f"The {_ADJ[rng.integers(len(_ADJ))]} {_NOUN[rng.integers(len(_NOUN))]}"
        rows.append(
            {
                "title_id": f"t{i:04d}",
                "name": name,
                "genres": genres,
                "cast": cast,
                "villain_actor": villain,
                "default_image_id": "",
                "runtime_minutes": runtime,
                "latent_appeal": float(rng.normal(0.0, p.title_appeal_sd)),
            }
        )
    return pd.DataFrame(rows)


def _new_source(rng: np.random.Generator, title: dict) -> dict:
    """Attributes of a new source image (people, framing, tone)."""
    style = str(rng.choice(np.array(STYLES), p=_STYLE_P))
    if style == "closeup":
        group = 1
    elif style == "character":
        group = int(rng.integers(1, 3))
    elif style == "scene":
        group = int(rng.integers(0, 5))
    elif style == "ensemble":
        group = int(rng.integers(3, 9))
    else:  # title_card: illustrated, few or no people
        group = int(rng.choice([0, 0, 1, 2]))
    faces = group if style != "scene" else int(rng.integers(0, group + 1))
    area_rng = {
        "closeup": (0.3, 0.6),
        "character": (0.1, 0.3),
        "scene": (0.02, 0.1),
        "ensemble": (0.03, 0.08),
        "title_card": (0.05, 0.2),
    }[style]
    face_area = float(rng.uniform(*area_rng)) if faces > 0 else 0.0
    expression = (
        "none" if faces == 0 else str(rng.choice(np.array(["neutral", "happy", "complex"]), p=[0.45, 0.3, 0.25]))
    )
    cast = list(title["cast"])
    villain = title["villain_actor"]
    shown: list[str] = []
    if group > 0:
        k = min(group, len(cast))
        w = 1.0 / (np.arange(len(cast)) + 1.0)
        shown = [str(a) for a in rng.choice(np.array(cast), size=k, replace=False, p=w / w.sum())]
        if villain is not None and villain not in shown and rng.random() < 0.3:
            shown[-1] = villain
    genres = list(title["genres"])
    tone = str(rng.choice(np.array(genres))) if rng.random() < 0.7 else str(rng.choice(np.array(TONES)))
    return {
        "num_faces": faces,
        "face_area": round(face_area, 4),
        "expression": expression,
        "villain_shown": bool(villain is not None and villain in shown),
        "cast_shown": shown,
        "group_size": group,
        "tone": tone,
        "style": style,
        "theme_tags": [str(x) for x in rng.choice(np.array(_THEMES), size=int(rng.integers(0, 4)), replace=False)],
    }


def _look(rng: np.random.Generator, style: str, tone: str, clickbait: bool) -> dict:
    """Colour grade and text of an image (varies between variants of one source)."""
    dark = tone in ("horror", "thriller", "crime")
    light = tone in ("comedy", "family", "romance")
    brightness = float(np.clip(rng.beta(2.5, 2.5) + (-0.15 if dark else 0.15 if light else 0.0), 0, 1))
    warmth = float(np.clip(rng.normal(0.2 if light else -0.2 if dark else 0.0, 0.45), -1, 1))
    contrast = float(np.clip(rng.beta(3, 3) + (0.25 if clickbait else 0.0), 0, 1))
    if rng.random() < 0.06:
        palette = "mono"
    elif warmth > 0.1:
        palette = str(rng.choice(np.array(_WARM_PALETTES)))
    elif warmth < -0.1:
        palette = str(rng.choice(np.array(_COOL_PALETTES)))
    else:
        palette = str(rng.choice(np.array([x for x in PALETTES if x != "mono"])))
    text = True if style == "title_card" else bool(rng.random() < (0.6 if clickbait else 0.3))
    return {
        "brightness": round(brightness, 4),
        "warmth": round(warmth, 4),
        "contrast": round(contrast, 4),
        "palette": palette,
        "text_present": text,
    }


def _gen_images(rng: np.random.Generator, titles: pd.DataFrame, p: WorldParams) -> pd.DataFrame:
    rows = []
    img_no = 0
    lin_no = 0
    lo, hi = min(p.pool_min, p.pool_max), max(p.pool_min, p.pool_max)
    for title in titles.to_dict("records"):
        n = int(rng.integers(lo, hi + 1))
        sources: list[tuple[str, dict]] = []
        for j in range(n):
            img_no += 1
            if j > 0 and rng.random() < p.variant_share:
                lineage, src = sources[int(rng.integers(len(sources)))]
            else:
                lin_no += 1
                lineage, src = f"l{lin_no:06d}", _new_source(rng, title)
                sources.append((lineage, src))
            clickbait = bool(rng.random() < p.clickbait_share)
            row = {
                "image_id": f"i{img_no:06d}",
                "title_id": title["title_id"],
                "lineage_id": lineage,
                **{k: (list(v) if isinstance(v, list) else v) for k, v in src.items()},
                **_look(rng, src["style"], src["tone"], clickbait),
                "active": True,
                "clickbait": clickbait,
            }
            rows.append(row)
    cols = [
        "image_id", "title_id", "lineage_id", "num_faces", "face_area", "expression",
        "villain_shown", "cast_shown", "group_size", "brightness", "warmth", "contrast", "tone",
        "style", "palette", "text_present", "theme_tags", "active", "clickbait",
    ]
    return pd.DataFrame(rows)[cols]


def _gen_viewing(rng: np.random.Generator, members: pd.DataFrame, titles: pd.DataFrame,
                 p: WorldParams, now: datetime) -> pd.DataFrame:
    n_m, n_t = len(members), len(titles)
    taste = np.vstack(members["latent_genre_weights"].to_numpy())
    tg = np.zeros((n_t, len(GENRES)))
    gi = {g: k for k, g in enumerate(GENRES)}
    for i, gs in enumerate(titles["genres"]):
        for g in gs:
            tg[i, gi[g]] = 1.0
    match = np.clip((taste @ tg.T) / taste.max(axis=1, keepdims=True), 0, 1)  # (m, t)
    fav_hit = np.zeros((n_m, n_t))
    cast_sets = [set(c) for c in titles["cast"]]
    for i, f in enumerate(members["latent_favourite_actors"]):
        fs = set(f)
        if fs:
            fav_hit[i] = [bool(fs & c) for c in cast_sets]
    logit = (
        titles["latent_appeal"].to_numpy(float)[None, :]
        + p.viewing_genre_effect * match
        + p.viewing_fav_actor_effect * fav_hit
    )
    prob = np.exp(logit - logit.max(axis=1, keepdims=True))
    cum = np.cumsum(prob / prob.sum(axis=1, keepdims=True), axis=1)

    tenure = members["tenure_days"].to_numpy(float)
    window = np.minimum(tenure, p.history_days)
    lam = p.views_per_member_mean * members["latent_activity"].to_numpy(float) * window / p.history_days
    counts = rng.poisson(lam)
    who = np.repeat(np.arange(n_m), counts)
    u = rng.random(len(who))
    t_idx = np.minimum((cum[who] < u[:, None]).sum(axis=1), n_t - 1)
    age_days = rng.uniform(0.0, 1.0, len(who)) * window[who]
    ts = pd.Timestamp(now) - pd.to_timedelta(age_days, unit="D")
    runtime = titles["runtime_minutes"].to_numpy(float)[t_idx]
    short = rng.random(len(who)) < 0.25
    minutes = np.where(
        short, rng.uniform(1.0, p.quality_minutes - 0.5, len(who)), runtime * rng.beta(4.0, 1.5, len(who))
    )
    df = pd.DataFrame(
        {
            "member_id": members["member_id"].to_numpy()[who],
            "title_id": titles["title_id"].to_numpy()[t_idx],
            "event_timestamp": ts.floor("s"),
            "minutes_watched": np.round(minutes, 2),
        }
    )
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return df.sort_values(["event_timestamp", "member_id"], kind="stable").reset_index(drop=True)


def build_world(
    out_dir: Path,
    seed: int = 7,
    members: int = 2000,
    titles: int = 120,
    params: WorldParams | None = None,
    now: datetime | None = None,
) -> Path:
    """Build a deterministic world for `seed` and write it to `out_dir`; return `out_dir`.

    `now` (UTC) is the end of the viewing history; by default today's midnight UTC.
    """
    p = params or WorldParams.model_validate({})
    now = _utc(now) if now is not None else _default_now()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    n_actors = max(12, round(titles * p.actors_per_title))
    actors = [f"a{i:04d}" for i in range(1, n_actors + 1)]
    actor_pop = 1.0 / (np.arange(n_actors) + 5.0)
    t_df = _gen_titles(rng, titles, actors, actor_pop, p)
    m_df = _gen_members(rng, members, actors, actor_pop, p)
    i_df = _gen_images(rng, t_df, p)
    v_df = _gen_viewing(rng, m_df, t_df, p, now)

    # The default image is the unpersonalized best: highest quality-play probability
    # averaged over all members (their main device and home country).
    world = World(m_df, t_df, i_df, v_df, p, now, seed)
    mean_q = world.mean_quality_by_image()
    best = (
        pd.DataFrame({"title_id": i_df["title_id"].to_numpy(), "image_id": mean_q.index, "q": mean_q.to_numpy()})
        .sort_values(["title_id", "q"], ascending=[True, False], kind="stable")
        .drop_duplicates("title_id")
        .set_index("title_id")["image_id"]
    )
    t_df["default_image_id"] = t_df["title_id"].map(best)

    m_df.to_parquet(out_dir / "members.parquet", index=False)
    t_df.to_parquet(out_dir / "titles.parquet", index=False)
    i_df.to_parquet(out_dir / "images.parquet", index=False)
    v_df.to_parquet(out_dir / "viewing.parquet", index=False)
    meta = {
        "seed": seed,
        "sizes": {
            "members": len(m_df),
            "titles": len(t_df),
            "images": len(i_df),
            "actors": n_actors,
            "viewing_events": len(v_df),
        },
        "params": p.model_dump(mode="json"),
        "now": now.isoformat(),
    }
    (out_dir / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out_dir


def load_world(dir: Path) -> World:
    """Read a world written by `build_world`."""
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
