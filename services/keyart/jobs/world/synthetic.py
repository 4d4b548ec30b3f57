"""Synthetic world generator: members with latent tastes, titles, artwork pools and viewing history.

`build_world` writes a deterministic world (for a seed) as parquet files plus
`world.json`, in the layout documented in keyart.jobs.world.world_model, whose
`load_world` reads it back as a `World` exposing the hidden ground truth. The
generator draws the latent columns (member tastes, title appeal, clickbait) that
the ground truth reads; nothing else in the code base needs this module.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from keyart.domain import DEVICES
from keyart.jobs.world.params import WorldParams
from keyart.jobs.world.vocab import COUNTRIES, GENRES, PALETTES, STYLES, TONES
from keyart.jobs.world.world_model import World

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
