"""Turn (member, context, candidate images) into the model's feature matrix.

The same code builds training rows and serving rows, so what the model learned
from is exactly what it sees. Image and title attributes are packed once per
catalog refresh into arrays (`CatalogIndex`); per request only the member columns
and the personalization crosses are computed, vectorized over all candidates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from keyart.domain import (
    COUNTRIES,
    DEVICES,
    EXPRESSIONS,
    GENRES,
    PALETTES,
    STYLES,
    TONES,
    Catalog,
    MemberFeatures,
    RequestContext,
)

SMALL_SCREENS = frozenset({"MOBILE", "TABLET"})

MEMBER_FEATURES: tuple[str, ...] = tuple(f"genre_{g}" for g in GENRES) + (
    "tenure_days",
    "country",
    "device",
    "is_main_device",
    "hour",
    "weekday",
    "history_views",  # log(1 + views): how much evidence stands behind the genre shares
    "history_minutes",  # log(1 + minutes)
)
TITLE_FEATURES: tuple[str, ...] = ("title_interacted", "title_genre_affinity", "pool_size")
IMAGE_FEATURES: tuple[str, ...] = (
    "num_faces",
    "face_area",
    "expression",
    "villain_shown",
    "group_size",
    "brightness",
    "warmth",
    "contrast",
    "tone",
    "style",
    "palette",
    "text_present",
    "cast_popularity",  # mean log(1 + titles) of the cast shown: stars everyone watches
)
CROSS_FEATURES: tuple[str, ...] = (
    "cast_affinity",  # sum of the member's affinity for the cast members shown
    "max_cast_affinity",
    "tone_affinity",  # the member's affinity for the genre the image's tone conveys
    "small_screen_group",  # group size when the screen is small (crowds read badly on phones)
    "small_screen_face",  # face area when the screen is small (a big face reads on a phone)
    "small_screen_text",  # text on a small screen (unreadable)
    "cast_known",  # cast members shown whom the member has watched
    "max_cast_views",  # max affinity x history views: about how many views featured that actor
)
FEATURE_NAMES: tuple[str, ...] = MEMBER_FEATURES + TITLE_FEATURES + IMAGE_FEATURES + CROSS_FEATURES
CATEGORICAL_FEATURES: tuple[str, ...] = ("country", "device", "expression", "tone", "style", "palette")
# Category codes: index in the vocabulary; unknown values get the last code.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "country": COUNTRIES,
    "device": DEVICES,
    "expression": EXPRESSIONS,
    "tone": TONES,
    "style": STYLES,
    "palette": PALETTES,
}
FEATURE_SCHEMA: str = hashlib.sha256(
    ("|".join(FEATURE_NAMES) + "#" + repr(sorted(VOCABULARIES.items()))).encode()
).hexdigest()[:16]

# Columns shared by every candidate of a title (member, request, title), logged per decision.
CONTEXT_WIDTH: int = len(MEMBER_FEATURES) + len(TITLE_FEATURES)

# Column of each feature in the matrix (for explanations, evaluation and tests).
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
GENRE_COLUMNS: tuple[int, ...] = tuple(FEATURE_INDEX[f"genre_{g}"] for g in GENRES)
_COL = FEATURE_INDEX
_GENRE_COLS_ARR = np.array(GENRE_COLUMNS, dtype=np.int64)
_IMAGE_COLS = [_COL[n] for n in IMAGE_FEATURES]
_SMALL_SCREEN_CODES = np.array([DEVICES.index(d) for d in sorted(SMALL_SCREENS)], dtype=np.float32)


def code(vocabulary: str, value: str) -> int:
    """Integer code of a categorical value; unknown values share one extra code."""
    vocab = VOCABULARIES[vocabulary]
    try:
        return vocab.index(value)
    except ValueError:
        return len(vocab)


@dataclass
class CatalogIndex:
    """Catalog attributes packed into arrays for vectorized featurization."""

    catalog: Catalog
    image_row: dict[str, int]  # image_id -> row of `image_matrix`
    image_matrix: np.ndarray  # shape (n_images, len(IMAGE_FEATURES)), float32
    image_tone: np.ndarray  # shape (n_images,), int: genre index of the tone
    image_cast: list[tuple[str, ...]]  # per row, the cast members shown
    title_row: dict[str, int]
    title_genres: np.ndarray  # shape (n_titles, len(GENRES)), rows sum to 1
    title_pool_size: np.ndarray  # shape (n_titles,), images in the title's pool (how much choice)

    @classmethod
    def build(cls, catalog: Catalog) -> CatalogIndex:
        image_ids = sorted(catalog.images)
        matrix = np.zeros((len(image_ids), len(IMAGE_FEATURES)), dtype=np.float32)
        tone = np.zeros(len(image_ids), dtype=np.int64)
        cast: list[tuple[str, ...]] = []
        titles_of_actor: dict[str, int] = {}
        for title in catalog.titles.values():
            for actor in set(title.cast):
                titles_of_actor[actor] = titles_of_actor.get(actor, 0) + 1
        for row, image_id in enumerate(image_ids):
            im = catalog.images[image_id]
            popularity = [np.log1p(titles_of_actor.get(a, 0)) for a in im.cast_shown]
            matrix[row] = (
                im.num_faces,
                im.face_area,
                code("expression", im.expression),
                float(im.villain_shown),
                im.group_size,
                im.brightness,
                im.warmth,
                im.contrast,
                code("tone", im.tone),
                code("style", im.style),
                code("palette", im.palette),
                float(im.text_present),
                float(np.mean(popularity)) if popularity else 0.0,
            )
            tone[row] = min(code("tone", im.tone), len(GENRES) - 1)
            cast.append(im.cast_shown)
        title_ids = sorted(catalog.titles)
        genres = np.zeros((len(title_ids), len(GENRES)), dtype=np.float32)
        for row, title_id in enumerate(title_ids):
            known = [GENRES.index(g) for g in catalog.titles[title_id].genres if g in GENRES]
            if known:
                genres[row, known] = 1.0 / len(known)
        return cls(
            catalog=catalog,
            image_row={image_id: i for i, image_id in enumerate(image_ids)},
            image_matrix=matrix,
            image_tone=tone,
            image_cast=cast,
            title_row={title_id: i for i, title_id in enumerate(title_ids)},
            title_genres=genres,
            title_pool_size=np.array([len(catalog.pool(t)) for t in title_ids], dtype=np.float32),
        )


def cold_member(member_id: str, context: RequestContext) -> MemberFeatures:
    """Features of a member the store does not know yet: no history, context's country."""
    return MemberFeatures(
        member_id=member_id,
        country=context.country,
        language=context.language,
        main_device=context.device,
        tenure_days=0.0,
        genre_affinity={g: 0.0 for g in GENRES},
        actor_affinity={},
        interacted_titles=frozenset(),
    )


def member_vector(member: MemberFeatures, context: RequestContext) -> np.ndarray:
    """Member and request columns, shape (len(MEMBER_FEATURES),)."""
    when: datetime = context.client_time
    return np.array(
        [member.genre_affinity.get(g, 0.0) for g in GENRES]
        + [
            member.tenure_days,
            code("country", context.country or member.country),
            code("device", context.device),
            float(context.device == member.main_device),
            when.hour,
            when.weekday(),
            np.log1p(member.history_views),
            np.log1p(member.history_minutes),
        ],
        dtype=np.float32,
    )


def context_columns(
    index: CatalogIndex,
    member: MemberFeatures,
    context: RequestContext,
    title_ids: list[str],
) -> np.ndarray:
    """Member, request and title columns of each title, shape (len(title_ids), CONTEXT_WIDTH).

    These are the columns every candidate image of a title shares; they are logged with
    each decision, so offline evaluation can rebuild the other candidates' rows from them.
    """
    mvec = member_vector(member, context)
    genre_vec = mvec[: len(GENRES)]
    t_rows = np.array([index.title_row.get(t, -1) for t in title_ids], dtype=np.int64)
    t_genre = np.where(t_rows >= 0, index.title_genres[np.maximum(t_rows, 0)] @ genre_vec, 0.0)
    t_seen = np.array([t in member.interacted_titles for t in title_ids], dtype=np.float32)
    out = np.empty((len(title_ids), CONTEXT_WIDTH), dtype=np.float32)
    out[:, : len(MEMBER_FEATURES)] = mvec
    out[:, _COL["title_interacted"]] = t_seen
    out[:, _COL["title_genre_affinity"]] = t_genre
    out[:, _COL["pool_size"]] = np.where(t_rows >= 0, index.title_pool_size[np.maximum(t_rows, 0)], 0.0)
    return out


def candidate_rows(
    index: CatalogIndex,
    contexts: np.ndarray,
    segment: np.ndarray,
    image_rows: np.ndarray,
    actor_maps: Sequence[Mapping[str, float]] | None,
) -> np.ndarray:
    """Complete feature rows: context columns, image columns and their crosses.

    The one place the model's crosses are computed: serving, training and offline
    evaluation all build candidate rows here.

    Args:
        contexts: shape (k, >= CONTEXT_WIDTH), context columns (a logged vector works too).
        segment: shape (n,), row of `contexts` each candidate belongs to.
        image_rows: shape (n,), rows of `index.image_matrix`, one per candidate.
        actor_maps: per row of `contexts`, actor -> affinity (None: cast crosses are 0).

    Returns:
        float32 array, shape (n, len(FEATURE_NAMES)).
    """
    n = len(image_rows)
    x = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    ctx = contexts[:, :CONTEXT_WIDTH][segment]
    x[:, :CONTEXT_WIDTH] = ctx
    x[:, _IMAGE_COLS] = index.image_matrix[image_rows]
    cast_sum = np.zeros(n, dtype=np.float32)
    cast_max = np.zeros(n, dtype=np.float32)
    cast_known = np.zeros(n, dtype=np.float32)
    if actor_maps is not None:
        for k, (r, s) in enumerate(zip(image_rows, segment)):
            actors = actor_maps[s]
            if actors:
                weights = [actors.get(a, 0.0) for a in index.image_cast[r]]
                cast_sum[k] = sum(weights)
                cast_max[k] = max(weights, default=0.0)
                cast_known[k] = sum(w > 0.0 for w in weights)
    x[:, _COL["cast_affinity"]] = cast_sum
    x[:, _COL["max_cast_affinity"]] = cast_max
    x[:, _COL["tone_affinity"]] = ctx[np.arange(n), _GENRE_COLS_ARR[index.image_tone[image_rows]]]
    small = np.isin(ctx[:, _COL["device"]], _SMALL_SCREEN_CODES).astype(np.float32)
    x[:, _COL["small_screen_group"]] = x[:, _COL["group_size"]] * small
    x[:, _COL["small_screen_face"]] = x[:, _COL["face_area"]] * small
    x[:, _COL["small_screen_text"]] = x[:, _COL["text_present"]] * small
    x[:, _COL["cast_known"]] = cast_known
    x[:, _COL["max_cast_views"]] = cast_max * np.expm1(ctx[:, _COL["history_views"]])
    return x


def build_matrix(
    index: CatalogIndex,
    member: MemberFeatures,
    context: RequestContext,
    title_ids: list[str],
    image_rows: np.ndarray,
    title_of_row: np.ndarray,
) -> np.ndarray:
    """Feature matrix for the candidates of one page.

    Args:
        title_ids: the titles the candidates belong to.
        image_rows: shape (n,), rows of `index.image_matrix`, one per candidate.
        title_of_row: shape (n,), index into `title_ids` for each candidate.

    Returns:
        float32 array, shape (n, len(FEATURE_NAMES)).
    """
    contexts = context_columns(index, member, context, title_ids)
    actors = [member.actor_affinity] * len(title_ids)
    return candidate_rows(index, contexts, np.asarray(title_of_row), np.asarray(image_rows), actors)
