"""A tiny hand-made catalog, member and model for fast core tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import lightgbm as lgb
import numpy as np

from keyart.core.feature_space import FeatureSpace
from keyart.core.model import QualityPlayModel
from keyart.domain import Catalog, ImageInfo, MemberFeatures, RequestContext, TitleInfo
from keyart.jobs.world.vocab import GENRES

NOW = datetime(2026, 11, 20, 20, 0, tzinfo=UTC)
STYLES = ("closeup", "character", "scene", "ensemble")
TONES = ("comedy", "romance", "action", "horror")


def _image(title_id: str, k: int) -> ImageInfo:
    return ImageInfo(
        image_id=f"{title_id}-i{k}",
        title_id=title_id,
        lineage_id=f"{title_id}-src{k // 2}",
        num_faces=k % 3,
        face_area=0.1 * (k % 4),
        expression=("none", "neutral", "happy", "complex")[k % 4],
        villain_shown=k % 5 == 0,
        cast_shown=(f"a{k % 3}",),
        group_size=k % 6,
        brightness=0.2 + 0.1 * (k % 5),
        warmth=-0.5 + 0.25 * (k % 4),
        contrast=0.5,
        tone=TONES[k % 4],
        style=STYLES[k % 4],
        palette=("red", "blue", "teal", "mono")[k % 4],
        text_present=k % 2 == 0,
    )


def make_catalog(n_titles: int = 6, pool: int = 5) -> Catalog:
    catalog = Catalog(version="tiny", vocabularies={"country": ("US", "GB", "BR"), "language": ("en-US", "pt-BR")})
    for t in range(n_titles):
        title_id = f"t{t}"
        images = [_image(title_id, k) for k in range(pool)]
        for im in images:
            catalog.images[im.image_id] = im
        catalog.titles[title_id] = TitleInfo(
            title_id=title_id,
            name=f"Title {t}",
            genres=(TONES[t % len(TONES)],),  # every tone names a genre of the catalog
            cast=("a0", "a1", "a2"),
            default_image_id=images[0].image_id,
            image_ids=tuple(im.image_id for im in images),
        )
    return catalog


def make_space() -> FeatureSpace:
    """The feature space of `make_catalog()` (what a model trained on it learns)."""
    return FeatureSpace.from_catalog(make_catalog())


def make_model(version: str = "tiny-1", ensemble: int = 4, seed: int = 3, face_effect: float = 0.5,
               space: FeatureSpace | None = None) -> QualityPlayModel:
    space = space or make_space()
    names = list(space.names)
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.random((n, len(names))).astype(np.float32)
    cols = space.index
    for name in space.categorical:
        x[:, cols[name]] = rng.integers(0, 4, n)
    complex_code = space.code("expression", "complex")
    logit = (-2 + 2.0 * x[:, cols["tone_affinity"]] + 0.8 * (x[:, cols["expression"]] == complex_code)
             + face_effect * x[:, cols["num_faces"]])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "seed": seed, "num_threads": 1}

    def fit(idx: np.ndarray, s: int) -> lgb.Booster:
        ds = lgb.Dataset(x[idx], y[idx], feature_name=names, categorical_feature=list(space.categorical))
        return lgb.train(params | {"seed": s}, ds, num_boost_round=20)

    booster = fit(np.arange(n), seed)
    members = [fit(rng.integers(0, n, n), seed + 1 + k) for k in range(ensemble)]
    return QualityPlayModel(version=version, booster=booster, ensemble=members, meta={}, space=space)


def make_member(member_id: str = "m1", favourite: str = "romance") -> MemberFeatures:
    return MemberFeatures(
        member_id=member_id,
        country="US",
        language="en-US",
        main_device="TV",
        tenure_days=300.0,
        genre_affinity={g: (0.6 if g == favourite else 0.04) for g in GENRES},
        actor_affinity={"a1": 0.8},
        interacted_titles=frozenset({"t1"}),
    )


def make_context(device: str = "TV") -> RequestContext:
    return RequestContext(country="US", language="en-US", device=device, surface="home", client_time=NOW)


def open_catalog() -> Catalog:
    """The tiny catalog with values no code constant knows, and two declared image attributes."""
    base = make_catalog()
    images = {}
    for k, (image_id, im) in enumerate(sorted(base.images.items())):
        images[image_id] = dataclasses.replace(
            im, expression=("intense", "wistful", "", "happy")[k % 4],
            tone=("romantic", "anime", "comedy", "")[k % 4],
            attributes={"cv_smile": 0.1 * (k % 7), "cv_scene": ("beach", "city", "")[k % 3]})
    titles = {t: dataclasses.replace(title, genres=(("anime",) if i % 2 else ("comedy", "romance")))
              for i, (t, title) in enumerate(sorted(base.titles.items()))}
    return Catalog(titles=titles, images=images, version="open",
                   vocabularies={"country": ("NZ", "US"), "language": ("en-NZ", "mi")},
                   image_attributes={"cv_smile": "numeric", "cv_scene": "categorical"},
                   tone_genre={"romantic": "romance"})
