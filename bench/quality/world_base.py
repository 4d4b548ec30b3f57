"""What every benchmark world shares: catalog generation, viewing history, ground truth.

A world is a ``SyntheticWorld`` subclass: it draws hidden member traits (taste,
fandom, ...), a catalog (titles, artwork pools and their attributes) and a viewing
history from them, and defines the ground truth as two logits per (member, context,
image): one for starting a play, one for continuing it to ``quality_minutes``.
P(quality play) = sigmoid(start) * sigmoid(continue), so an image can make members
start a play without making them stay (clickbait).

Only the Parquet files of ``write_import_dir`` leave the harness (the format of
``keyart.jobs.world.import_schema``); the traits and the truth stay here. The
vocabularies below are the customer's own; today they fit Keyart's closed lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

GENRES = ("action", "comedy", "crime", "documentary", "drama", "family", "horror", "romance", "scifi", "thriller")
EXPRESSIONS = ("none", "neutral", "happy", "complex")
STYLES = ("closeup", "character", "scene", "ensemble", "title_card")
PALETTES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "mono")
DEVICES = ("TV", "WEB", "MOBILE", "TABLET")
COUNTRIES = ("US", "GB", "BR", "IN", "JP", "DE", "FR", "MX", "KR", "ES")
LANGUAGE = {"US": "en", "GB": "en", "BR": "pt", "IN": "hi", "JP": "ja", "DE": "de", "FR": "fr", "MX": "es",
            "KR": "ko", "ES": "es"}
G = {g: k for k, g in enumerate(GENRES)}
NOW = datetime(2026, 11, 23, tzinfo=UTC)  # end of every world's history; decisions follow it


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Scale:
    """How big a world is drawn (the tiny scale keeps the harness test fast)."""

    members: int
    titles: int
    actors: int


FULL = Scale(members=5000, titles=200, actors=450)
TINY = Scale(members=500, titles=40, actors=90)


class SyntheticWorld:
    """Base class: generation and truth plumbing; subclasses define the effects."""

    name = "base"
    seed = 0
    quality_minutes = 15.0
    history_days = 180
    country_p = (0.35, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05)
    main_device_p = (0.4, 0.2, 0.3, 0.1)
    main_device_share = 0.7  # share of a member's sessions on the main device
    taste_concentration = 0.5  # Dirichlet concentration of genre taste (low: focused tastes)
    new_member_share = 0.08  # members without any viewing history yet
    mean_events = 28.0

    def __init__(self, scale: Scale = FULL) -> None:
        self.scale = scale
        self.rng = np.random.default_rng(self.seed)
        self._generate()

    # ------------------------------------------------------------------ hooks
    def pool_sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(2, 7, n)

    def member_traits(self, rng: np.random.Generator) -> None:
        """Hidden member traits beyond genre taste (fandom, ...); default none."""

    def choice_logits(self) -> np.ndarray:
        """Logit of each member picking each title in the viewing history, (n_m, n_t)."""
        return np.log(self.t_pop)[None, :] + 4.0 * (self.m_taste @ self.t_genre.T)

    def image_attributes(self, rng: np.random.Generator) -> None:
        """Fill the image attribute arrays (self.i_*) for self.i_title."""
        self._default_image_attributes(rng)

    def logits(self, m: np.ndarray, i: np.ndarray, dev: np.ndarray, ctry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start logit, continue logit) per row; all arguments are index arrays of equal length."""
        raise NotImplementedError

    # ------------------------------------------------------------------ truth
    def p_start(self, m, i, dev, ctry) -> np.ndarray:
        s, _ = self.logits(*(np.asarray(a, dtype=np.int64) for a in (m, i, dev, ctry)))
        return sigmoid(s)

    def p_quality(self, m, i, dev, ctry) -> np.ndarray:
        s, c = self.logits(*(np.asarray(a, dtype=np.int64) for a in (m, i, dev, ctry)))
        return sigmoid(s) * sigmoid(c)

    def sample_outcomes(self, rng: np.random.Generator, m, i, dev, ctry) -> tuple[np.ndarray, np.ndarray]:
        """(started, minutes played) per row, drawn from the truth.

        A quality play lasts quality_minutes plus an exponential tail (capped by the
        runtime); a play that does not last stops after a few minutes.
        """
        s, c = self.logits(*(np.asarray(a, dtype=np.int64) for a in (m, i, dev, ctry)))
        started = rng.random(len(s)) < sigmoid(s)
        stays = started & (rng.random(len(s)) < sigmoid(c))
        qm = self.quality_minutes
        runtime = self.t_runtime[self.i_title[np.asarray(i, dtype=np.int64)]]
        long = np.minimum(qm + rng.exponential(25.0, len(s)), runtime)
        short = rng.uniform(0.5, qm * 0.6, len(s))
        minutes = np.where(stays, long, np.where(started, short, 0.0))
        return started, np.round(minutes, 2)

    # ------------------------------------------------------------------ shared terms
    def match(self, m: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Member taste for the title's genres, in [0, 1]."""
        return np.einsum("ij,ij->i", self.m_taste[m], self.t_genre[t])

    def tone_taste(self, m: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Member taste for the genre the image's tone conveys, in [0, 1]."""
        return self.m_taste[m, self.i_tone[i]]

    def watched(self, m: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True where the member's history holds the title."""
        codes = m.astype(np.int64) * self.n_titles + t
        w = self._watched_codes  # sorted, unique
        if not len(w):
            return np.zeros(len(codes), dtype=bool)
        pos = np.minimum(np.searchsorted(w, codes), len(w) - 1)
        return w[pos] == codes

    def cast_fandom(self, m: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Sum of the member's (hidden) fandom for the cast members the image shows."""
        if self.m_fandom.nnz == 0:
            return np.zeros(len(m))
        return np.asarray(self.m_fandom[m].multiply(self.i_cast[i]).sum(axis=1)).ravel()

    # ------------------------------------------------------------------ generation
    def _generate(self) -> None:
        rng, sc = self.rng, self.scale
        self.n_members, self.n_titles, self.n_actors = sc.members, sc.titles, sc.actors
        self.now = NOW
        # Members.
        self.m_country = rng.choice(len(COUNTRIES), sc.members, p=self.country_p)
        self.m_device = rng.choice(len(DEVICES), sc.members, p=self.main_device_p)
        self.m_taste = rng.dirichlet(np.full(len(GENRES), self.taste_concentration), sc.members)
        self.m_activity = rng.lognormal(0.0, 0.6, sc.members)
        self.m_tenure = np.maximum(1.0, rng.exponential(500.0, sc.members))
        new = rng.random(sc.members) < self.new_member_share
        self.m_tenure[new] = rng.uniform(0.5, 6.0, int(new.sum()))
        self.m_new = new
        self.m_fandom = sparse.csr_matrix((sc.members, sc.actors))
        self.a_pop = rng.zipf(1.6, sc.actors).clip(1, 200).astype(float)
        self.member_traits(rng)
        # Titles.
        self.t_pop = rng.lognormal(0.0, 0.8, sc.titles)
        genre_p = np.array([0.14, 0.14, 0.1, 0.05, 0.16, 0.08, 0.07, 0.09, 0.08, 0.09])
        self.t_genres: list[tuple[str, ...]] = []
        self.t_genre = np.zeros((sc.titles, len(GENRES)))
        self.t_cast: list[list[int]] = []
        self.t_villain: list[int | None] = []
        a_p = self.a_pop / self.a_pop.sum()
        for t in range(sc.titles):
            k = rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2])
            gs = rng.choice(len(GENRES), k, replace=False, p=genre_p)
            self.t_genres.append(tuple(GENRES[g] for g in gs))
            self.t_genre[t, gs] = 1.0 / k
            cast = list(rng.choice(sc.actors, rng.integers(3, 8), replace=False, p=a_p))
            self.t_cast.append([int(a) for a in cast])
            villain = any(GENRES[g] in ("action", "crime", "thriller", "horror", "scifi") for g in gs)
            self.t_villain.append(int(cast[-1]) if villain and rng.random() < 0.7 else None)
        self.t_runtime = np.where(rng.random(sc.titles) < 0.25, rng.uniform(40, 60, sc.titles),
                                  rng.uniform(85, 150, sc.titles))
        # Artwork pools.
        sizes = self.pool_sizes(rng, sc.titles)
        self.i_title = np.repeat(np.arange(sc.titles), sizes)
        self.pools = np.split(np.arange(len(self.i_title)), np.cumsum(sizes)[:-1])
        self.n_images = len(self.i_title)
        self.image_attributes(rng)
        self._viewing(rng)

    def _default_image_attributes(self, rng: np.random.Generator, bait: np.ndarray | None = None) -> None:
        n = self.n_images
        tone = np.empty(n, dtype=np.int64)
        cast_rows, cast_cols = [], []
        num_faces = np.zeros(n, dtype=np.int64)
        villain = np.zeros(n, dtype=bool)
        for k, t in enumerate(self.i_title):
            own = [G[g] for g in self.t_genres[t]]
            tone[k] = rng.choice(own) if rng.random() < 0.75 else rng.integers(len(GENRES))
            n_shown = rng.choice([0, 1, 1, 2, 2, 3])
            cast = self.t_cast[t]
            shown = rng.choice(cast, min(n_shown, len(cast)), replace=False) if n_shown else []
            cast_rows += [k] * len(shown)
            cast_cols += [int(a) for a in shown]
            num_faces[k] = len(shown)
            villain[k] = self.t_villain[t] is not None and self.t_villain[t] in set(int(a) for a in shown)
        self.i_tone = tone
        self.i_cast = sparse.csr_matrix((np.ones(len(cast_rows)), (cast_rows, cast_cols)), shape=(n, self.n_actors))
        self.i_num_faces = num_faces
        self.i_villain = villain
        self.i_group = num_faces + rng.choice([0, 0, 0, 1, 2, 4], n)
        faces = num_faces > 0
        self.i_face_area = np.where(faces, rng.beta(2.0, 5.0, n) / np.maximum(1, num_faces) ** 0.5, 0.0).round(3)
        style = np.where(num_faces == 0, rng.choice([2, 4], n, p=[0.7, 0.3]),
                         np.where(num_faces == 1, rng.choice([0, 1, 2], n, p=[0.5, 0.35, 0.15]),
                                  rng.choice([1, 2, 3], n, p=[0.3, 0.3, 0.4])))
        style = np.where((self.i_group >= 4) & (style != 4), 3, style)
        self.i_style = style
        self.i_expression = np.where(faces, rng.choice([1, 2, 3], n, p=[0.4, 0.35, 0.25]), 0)
        self.i_palette = rng.integers(len(PALETTES), size=n)
        self.i_brightness = rng.beta(3.0, 3.0, n).round(3)
        self.i_warmth = rng.uniform(-1.0, 1.0, n).round(3)
        self.i_contrast = rng.beta(3.0, 3.0, n).round(3)
        self.i_text = rng.random(n) < 0.35
        self.i_bait = np.zeros(n, dtype=bool) if bait is None else bait
        self.i_quality = rng.normal(0.0, 0.25, n)  # intrinsic appeal (what a non-contextual bandit can learn)
        self.i_lineage = np.array([f"L{k:05d}" for k in range(n)], dtype=object)

    def _viewing(self, rng: np.random.Generator) -> None:
        logits = self.choice_logits()
        span = np.minimum(self.m_tenure, self.history_days)
        n_events = rng.poisson(self.mean_events * self.m_activity * span / self.history_days)
        n_events[self.m_new] = 0
        ms, ts = [], []
        for m in np.flatnonzero(n_events):
            z = logits[m] - logits[m].max()
            p = np.exp(z) / np.exp(z).sum()
            ms.append(np.full(n_events[m], m))
            ts.append(rng.choice(self.n_titles, n_events[m], p=p))
        m_arr = np.concatenate(ms) if ms else np.array([], dtype=np.int64)
        t_arr = np.concatenate(ts) if ts else np.array([], dtype=np.int64)
        age_days = rng.uniform(0.0, 1.0, len(m_arr)) * span[m_arr]
        like = rng.random(len(m_arr)) < sigmoid(6.0 * (self.match(m_arr, t_arr) - 0.15) + 0.5)
        runtime = self.t_runtime[t_arr]
        minutes = np.where(like, runtime * rng.uniform(0.6, 1.0, len(m_arr)), rng.uniform(2.0, 25.0, len(m_arr)))
        when = pd.Timestamp(self.now) - pd.to_timedelta(age_days * 86400.0 + 60.0, unit="s")
        self.viewing = pd.DataFrame({
            "member_id": [self.member_id(m) for m in m_arr],
            "title_id": [self.title_id(t) for t in t_arr],
            "event_timestamp": when.floor("s"),
            "minutes_watched": np.round(minutes, 1),
        })
        self._watched_codes = np.unique(m_arr.astype(np.int64) * self.n_titles + t_arr)

    # ------------------------------------------------------------------ ids and files
    @staticmethod
    def member_id(m: int) -> str:
        return f"m{m:05d}"

    @staticmethod
    def title_id(t: int) -> str:
        return f"t{t:04d}"

    @staticmethod
    def actor_id(a: int) -> str:
        return f"a{a:04d}"

    def image_id(self, i: int) -> str:
        t = self.i_title[i]
        return f"{self.title_id(t)}-{i - self.pools[t][0]:02d}"

    def tables(self) -> dict[str, pd.DataFrame]:
        """The customer's files (no hidden trait, no truth)."""
        members = pd.DataFrame({
            "member_id": [self.member_id(m) for m in range(self.n_members)],
            "country": [COUNTRIES[c] for c in self.m_country],
            "language": [LANGUAGE[COUNTRIES[c]] for c in self.m_country],
            "main_device": [DEVICES[d] for d in self.m_device],
            "tenure_days": np.round(self.m_tenure, 1),
        })
        image_ids = [self.image_id(i) for i in range(self.n_images)]
        titles = pd.DataFrame({
            "title_id": [self.title_id(t) for t in range(self.n_titles)],
            "name": [f"{self.name.replace('_', ' ').title()} {t:03d}" for t in range(self.n_titles)],
            "genres": [list(g) for g in self.t_genres],
            "cast": [[self.actor_id(a) for a in c] for c in self.t_cast],
            "villain_actor": [None if v is None else self.actor_id(v) for v in self.t_villain],
            "default_image_id": [image_ids[p[0]] for p in self.pools],
            "runtime_minutes": np.round(self.t_runtime, 0),
        })
        cast = self.i_cast.tolil().rows
        images = pd.DataFrame({
            "image_id": image_ids,
            "title_id": [self.title_id(int(t)) for t in self.i_title],
            "lineage_id": list(self.i_lineage),
            "num_faces": self.i_num_faces.astype(np.int64),
            "face_area": self.i_face_area.astype(float),
            "expression": [EXPRESSIONS[e] for e in self.i_expression],
            "villain_shown": self.i_villain.astype(bool),
            "cast_shown": [[self.actor_id(a) for a in r] for r in cast],
            "group_size": self.i_group.astype(np.int64),
            "brightness": self.i_brightness.astype(float),
            "warmth": self.i_warmth.astype(float),
            "contrast": self.i_contrast.astype(float),
            "tone": [GENRES[g] for g in self.i_tone],
            "style": [STYLES[s] for s in self.i_style],
            "palette": [PALETTES[p] for p in self.i_palette],
            "text_present": self.i_text.astype(bool),
        })
        return {"members": members, "titles": titles, "images": images, "viewing": self.viewing}

    def manifest(self) -> dict:
        return {"format": "keyart-world/1", "now": self.now.isoformat(), "history_days": self.history_days,
                "quality_minutes": self.quality_minutes}

    def write_import_dir(self, out: Path) -> dict[str, int]:
        """Write members/titles/images/viewing.parquet and manifest.json; returns row counts."""
        out.mkdir(parents=True, exist_ok=True)
        tables = self.tables()
        lists = pa.list_(pa.string())
        schemas = {
            "titles": {"genres": lists, "cast": lists, "villain_actor": pa.string()},
            "images": {"cast_shown": lists},
            "viewing": {"event_timestamp": pa.timestamp("us", tz="UTC")},
        }
        for key, df in tables.items():
            fields = [pa.field(c, schemas.get(key, {}).get(c) or pa.Schema.from_pandas(df[[c]],
                      preserve_index=False).field(c).type) for c in df.columns]
            pq.write_table(pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False),
                           out / f"{key}.parquet")
        (out / "manifest.json").write_text(json.dumps(self.manifest(), indent=2))
        return {k: len(v) for k, v in tables.items()}

    # ------------------------------------------------------------------ summaries
    def describe(self) -> dict:
        sizes = np.array([len(p) for p in self.pools])
        return {
            "members": self.n_members, "titles": self.n_titles, "images": self.n_images,
            "actors": self.n_actors, "viewing_events": len(self.viewing),
            "members_without_history": int(self.m_new.sum()),
            "pool_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                           "histogram": {str(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))}},
            "clickbait_images": int(self.i_bait.sum()),
            "quality_minutes": self.quality_minutes,
            "now": self.now.isoformat(),
        }


def decision_start() -> datetime:
    """Client time of the first decision: the end of every world's history."""
    return NOW + timedelta(minutes=1)
