"""Turn (member, context, candidate images) into the model's feature matrix.

The same code builds training rows and serving rows, so what the model learned
from is exactly what it sees. Image and title attributes are packed once per
catalog refresh into arrays (`CatalogIndex`); per request only the member columns
and the personalization crosses are computed, vectorized over all candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from keyart.core.feature_space import ATTRIBUTE_PREFIX, IMAGE_FIXED, TITLE_FEATURES, FeatureSpace
from keyart.domain import DEVICES, FEATURE_DTYPE, Catalog, FeatureRow, MemberFeatures, RequestContext

SMALL_SCREENS = frozenset({"MOBILE", "TABLET"})
_SMALL_SCREEN_CODES = np.array([DEVICES.index(d) for d in sorted(SMALL_SCREENS)], dtype=np.float32)


def _number(v: object) -> float:
    """A declared numeric attribute as float; missing or not a number is NaN (unknown)."""
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _images_by_title(catalog: Catalog) -> dict[str, frozenset[str]]:
    """Every image id of each title (active or not), as candidate lists are checked against."""
    out: dict[str, set[str]] = {}
    for image in catalog.images.values():
        out.setdefault(image.title_id, set()).add(image.image_id)
    return {t: frozenset(ids) for t, ids in out.items()}


@dataclass
class CatalogIndex:
    """Catalog attributes packed into arrays for vectorized featurization, in one feature space.

    The space is the serving model's (the columns it learned) or, before a first model,
    the catalog's own (`FeatureSpace.from_catalog`).
    """

    catalog: Catalog
    space: FeatureSpace
    image_row: dict[str, int]  # image_id -> row of `image_matrix`
    image_matrix: np.ndarray  # shape (n_images, len(space.image_features)), float32
    image_tone: np.ndarray  # shape (n_images,), int: index in space.genres of the tone's genre, -1 if none
    image_cast: list[tuple[str, ...]]  # per row, the cast members shown
    # The same as a CSR over actor ids, for vectorized cast crosses: the actors of image
    # row r are cast_actor[cast_ptr[r]:cast_ptr[r + 1]], ids into actor_id.
    actor_id: dict[str, int]
    cast_ptr: np.ndarray
    cast_actor: np.ndarray
    title_row: dict[str, int]
    title_genres: np.ndarray  # shape (n_titles, len(space.genres)), rows sum to 1 (or 0)
    title_pool_size: np.ndarray  # shape (n_titles,), images in the title's pool (how much choice)
    title_images: dict[str, frozenset[str]] = field(default_factory=dict)  # title_id -> its image ids
    # What the ranker resolved each (title, candidate ids) of a page to, in this snapshot:
    # a title's candidate list comes back on every page that shows it, and checking it
    # again cost about 4 µs a title. Filled and bounded by the ranker.
    resolved: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in row order (the rows of `image_matrix`)."""
        return sorted(self.image_row, key=self.image_row.__getitem__)

    @classmethod
    def build(cls, catalog: Catalog, space: FeatureSpace | None = None) -> CatalogIndex:
        space = space or FeatureSpace.from_catalog(catalog)
        image_ids = sorted(catalog.images)
        matrix = np.zeros((len(image_ids), len(space.image_features)), dtype=np.float32)
        tone = np.zeros(len(image_ids), dtype=np.int64)
        cast: list[tuple[str, ...]] = []
        titles_of_actor: dict[str, int] = {}
        for title in catalog.titles.values():
            for actor in set(title.cast):
                titles_of_actor[actor] = titles_of_actor.get(actor, 0) + 1
        attributes = space.image_features[len(IMAGE_FIXED):]
        categorical = set(space.categorical)
        for row, image_id in enumerate(image_ids):
            im = catalog.images[image_id]
            popularity = [np.log1p(titles_of_actor.get(a, 0)) for a in im.cast_shown]
            fixed = (
                im.num_faces,
                im.face_area,
                space.code("expression", im.expression),
                float(im.villain_shown),
                im.group_size,
                im.brightness,
                im.warmth,
                im.contrast,
                space.code("tone", im.tone),
                space.code("style", im.style),
                space.code("palette", im.palette),
                float(im.text_present),
                float(np.mean(popularity)) if popularity else 0.0,
            )
            extra = [
                space.code(col, str(im.attributes.get(col[len(ATTRIBUTE_PREFIX):], "")))
                if col in categorical
                else _number(im.attributes.get(col[len(ATTRIBUTE_PREFIX):]))
                for col in attributes
            ]
            matrix[row] = (*fixed, *extra)
            tone[row] = space.tone_genre_index(im.tone)
            cast.append(im.cast_shown)
        actor_id: dict[str, int] = {}
        for shown in cast:
            for actor in shown:
                actor_id.setdefault(actor, len(actor_id))
        cast_ptr = np.zeros(len(cast) + 1, dtype=np.int64)
        cast_ptr[1:] = np.cumsum([len(shown) for shown in cast])
        cast_actor = np.array([actor_id[a] for shown in cast for a in shown], dtype=np.int64)
        title_ids = sorted(catalog.titles)
        genres = np.zeros((len(title_ids), len(space.genres)), dtype=np.float32)
        genre_col = {g: k for k, g in enumerate(space.genres)}
        for row, title_id in enumerate(title_ids):
            known = [genre_col[g] for g in catalog.titles[title_id].genres if g in genre_col]
            if known:
                genres[row, known] = 1.0 / len(known)
        return cls(
            catalog=catalog,
            space=space,
            image_row={image_id: i for i, image_id in enumerate(image_ids)},
            image_matrix=matrix,
            image_tone=tone,
            image_cast=cast,
            actor_id=actor_id,
            cast_ptr=cast_ptr,
            cast_actor=cast_actor,
            title_row={title_id: i for i, title_id in enumerate(title_ids)},
            title_genres=genres,
            title_pool_size=np.array([len(catalog.pool(t)) for t in title_ids], dtype=np.float32),
            title_images=_images_by_title(catalog),
        )


def cold_member(member_id: str, context: RequestContext) -> MemberFeatures:
    """Features of a member the store does not know yet: no history, context's country."""
    return MemberFeatures(
        member_id=member_id,
        country=context.country,
        language=context.language,
        main_device=context.device,
        tenure_days=0.0,
        genre_affinity={},
        actor_affinity={},
        interacted_titles=frozenset(),
    )


def member_vector(space: FeatureSpace, member: MemberFeatures, context: RequestContext) -> np.ndarray:
    """Member and request columns, shape (len(space.member_features),)."""
    when: datetime = context.client_time
    genre = member.genre_affinity
    return np.array(
        [genre.get(g, 0.0) for g in space.genres]
        + [
            member.tenure_days,
            space.code("country", context.country or member.country),
            space.code("language", context.language or member.language),
            space.code("device", context.device),
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
    """Member, request and title columns of each title, shape (len(title_ids), space.context_width).

    These are the columns every candidate image of a title shares; they are logged with
    each decision, so offline evaluation can rebuild the other candidates' rows from them.
    """
    space = index.space
    col = space.index
    mvec = member_vector(space, member, context)
    genre_vec = mvec[: len(space.genres)]
    t_rows = np.array([index.title_row.get(t, -1) for t in title_ids], dtype=np.int64)
    t_genre = np.where(t_rows >= 0, index.title_genres[np.maximum(t_rows, 0)] @ genre_vec, 0.0)
    t_seen = np.array([t in member.interacted_titles for t in title_ids], dtype=np.float32)
    out = np.empty((len(title_ids), space.context_width), dtype=np.float32)
    out[:, : len(space.member_features)] = mvec
    out[:, col["title_interacted"]] = t_seen
    out[:, col["title_genre_affinity"]] = t_genre
    out[:, col["pool_size"]] = np.where(t_rows >= 0, index.title_pool_size[np.maximum(t_rows, 0)], 0.0)
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
        contexts: shape (k, >= space.context_width), context columns (a logged vector works too).
        segment: shape (n,), row of `contexts` each candidate belongs to.
        image_rows: shape (n,), rows of `index.image_matrix`, one per candidate.
        actor_maps: per row of `contexts`, actor -> affinity (None: cast crosses are 0).

    Returns:
        float32 array, shape (n, len(space.names)).
    """
    space = index.space
    col = space.index
    width = space.context_width
    n = len(image_rows)
    x = np.empty((n, len(space.names)), dtype=np.float32)
    ctx = contexts[:, :width][segment]
    x[:, :width] = ctx
    x[:, width : width + len(space.image_features)] = index.image_matrix[image_rows]
    cast_sum, cast_max, cast_known = _cast_crosses(index, segment, image_rows, actor_maps)
    x[:, col["cast_affinity"]] = cast_sum
    x[:, col["max_cast_affinity"]] = cast_max
    # The member's share of the genre the tone conveys; NaN (unknown) for a tone that conveys none.
    tone = index.image_tone[image_rows]
    if len(space.genres):
        genre_cols = np.asarray(space.genre_columns, dtype=np.int64)
        affinity = ctx[np.arange(n), genre_cols[np.maximum(tone, 0)]]
    else:
        affinity = np.zeros(n, dtype=np.float32)
    x[:, col["tone_affinity"]] = np.where(tone >= 0, affinity, np.nan)
    device = ctx[:, col["device"]]
    small = device == _SMALL_SCREEN_CODES[0]
    for code in _SMALL_SCREEN_CODES[1:]:  # np.isin: 3x the time for two codes
        small |= device == code
    x[:, col["small_screen_group"]] = np.where(small, x[:, col["group_size"]], 0.0)
    x[:, col["small_screen_face"]] = np.where(small, x[:, col["face_area"]], 0.0)
    x[:, col["small_screen_text"]] = np.where(small, x[:, col["text_present"]], 0.0)
    x[:, col["cast_known"]] = cast_known
    x[:, col["max_cast_views"]] = cast_max * np.expm1(ctx[:, col["history_views"]])
    return x


def _cast_crosses(
    index: CatalogIndex,
    segment: np.ndarray,
    image_rows: np.ndarray,
    actor_maps: Sequence[Mapping[str, float]] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate: sum, max and count (> 0) of the member's affinity for the cast shown.

    A page's candidates share one actor map (its member's): that case is vectorized over
    the catalog's cast arrays. Rows of many members (offline evaluation) loop per row.
    Sums run in the cast's order either way, so both give the same floats.
    """
    n = len(image_rows)
    cast_sum = np.zeros(n, dtype=np.float64)
    cast_max = np.zeros(n, dtype=np.float64)
    cast_known = np.zeros(n, dtype=np.float64)
    if actor_maps is None or n == 0:
        return cast_sum, cast_max, cast_known
    first = actor_maps[0] if len(actor_maps) else {}
    if all(m is first for m in actor_maps):
        if not first:
            return cast_sum, cast_max, cast_known
        weight_of = np.zeros(len(index.actor_id), dtype=np.float64)
        for actor, w in first.items():
            j = index.actor_id.get(actor)
            if j is not None:
                weight_of[j] = w
        rows = np.asarray(image_rows, dtype=np.int64)
        begin = index.cast_ptr[rows]
        lengths = index.cast_ptr[rows + 1] - begin
        total = int(lengths.sum())
        if total:
            owner = np.repeat(np.arange(n), lengths)  # candidate of each (candidate, cast member) pair
            offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            weights = weight_of[index.cast_actor[np.repeat(begin, lengths) + offset]]
            cast_sum += np.bincount(owner, weights=weights, minlength=n)
            np.maximum.at(cast_max, owner, weights)
            cast_known += np.bincount(owner, weights=(weights > 0.0).astype(np.float64), minlength=n)
        return cast_sum, cast_max, cast_known
    for k, (r, s) in enumerate(zip(image_rows, segment)):
        actors = actor_maps[s]
        if actors:
            weights = [actors.get(a, 0.0) for a in index.image_cast[r]]
            cast_sum[k] = sum(weights)
            cast_max[k] = max(weights, default=0.0)
            cast_known[k] = sum(w > 0.0 for w in weights)
    return cast_sum, cast_max, cast_known


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
        float32 array, shape (n, len(index.space.names)).
    """
    contexts = context_columns(index, member, context, title_ids)
    actors = [member.actor_affinity] * len(title_ids)
    return candidate_rows(index, contexts, np.asarray(title_of_row), np.asarray(image_rows), actors)


def feature_rows(x: np.ndarray) -> list[FeatureRow]:
    """Each row of `x` (shape (n, width)) as a logged FeatureRow, the page encoded at once."""
    if x.ndim != 2:
        raise ValueError(f"feature rows need a matrix, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=FEATURE_DTYPE)
    width = x.shape[1] * x.itemsize
    if width == 0:
        return [b""] * len(x)
    raw = x.tobytes()
    return [raw[k:k + width] for k in range(0, len(raw), width)]


__all__ = [
    "SMALL_SCREENS",
    "TITLE_FEATURES",
    "CatalogIndex",
    "FeatureSpace",
    "build_matrix",
    "candidate_rows",
    "cold_member",
    "context_columns",
    "feature_rows",
    "member_vector",
]
