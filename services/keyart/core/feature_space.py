"""The model's feature space: which columns exist and what each category code means.

Vocabularies are open: the genres, tones, expressions, styles, palettes, countries
and languages are the imported catalog's own (`FeatureSpace.from_catalog`), and a
customer's declared image attributes become columns of their own. A trained model
stores the space it learned with (`to_dict` in its meta.json) and serving
featurizes with that space, so a value the model never saw gets the "unknown" code
of its vocabulary instead of another value's code. `schema_id` names a space in
the decision log (`Impression.feature_schema`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from keyart.domain import DEVICES, Catalog

FORMAT = "keyart-feature-space/1"

# Columns that do not depend on the vocabularies, in matrix order around the open ones.
MEMBER_FIXED: tuple[str, ...] = (
    "tenure_days",
    "country",
    "language",
    "device",
    "is_main_device",
    "hour",
    "weekday",
    "history_views",  # log(1 + views): how much evidence stands behind the genre shares
    "history_minutes",  # log(1 + minutes)
)
TITLE_FEATURES: tuple[str, ...] = ("title_interacted", "title_genre_affinity", "pool_size")
IMAGE_FIXED: tuple[str, ...] = (
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
# The fixed categorical columns; their vocabularies are the catalog's (device's is the API's).
CATEGORIES: tuple[str, ...] = ("country", "language", "device", "expression", "tone", "style", "palette")
ATTRIBUTE_PREFIX = "attr_"
ATTRIBUTE_KINDS: tuple[str, ...] = ("numeric", "categorical")


class FeatureSpaceError(ValueError):
    """A stored feature space cannot be read; the message says which key is wrong."""


def _values(values: Iterable[str]) -> tuple[str, ...]:
    """Sorted distinct non-empty values ("" means unknown and gets the unknown code)."""
    return tuple(sorted({str(v) for v in values if v is not None and str(v) != ""}))


@dataclass(frozen=True)
class FeatureSpace:
    """Open vocabularies and the feature columns they imply."""

    genres: tuple[str, ...]
    vocabularies: Mapping[str, tuple[str, ...]]  # categorical column -> values; code = index
    numeric_attributes: tuple[str, ...] = ()
    categorical_attributes: tuple[str, ...] = ()
    tone_genre: Mapping[str, str] = field(default_factory=dict)  # tone -> genre it conveys

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> FeatureSpace:
        """The space of a catalog: every value it uses or declares, sorted.

        A tone conveys the genre the catalog maps it to (`Catalog.tone_genre`), else the
        genre of the same name (case-insensitive), else none (its affinity cross is NaN).
        """
        images = catalog.images.values()
        genres = _values(g for t in catalog.titles.values() for g in t.genres)
        kinds = catalog.image_attributes
        numeric = tuple(sorted(n for n, k in kinds.items() if k == "numeric"))
        categorical = tuple(sorted(n for n, k in kinds.items() if k == "categorical"))
        vocab: dict[str, tuple[str, ...]] = {
            "country": _values(catalog.vocabularies.get("country", ())),
            "language": _values(catalog.vocabularies.get("language", ())),
            "device": DEVICES,
            "expression": _values(im.expression for im in images),
            "tone": _values(im.tone for im in images),
            "style": _values(im.style for im in images),
            "palette": _values(im.palette for im in images),
        }
        for name in categorical:
            vocab[ATTRIBUTE_PREFIX + name] = _values(str(im.attributes.get(name, "")) for im in images)
        by_lower = {g.lower(): g for g in genres}
        tone_genre: dict[str, str] = {}
        for tone in vocab["tone"]:
            genre = catalog.tone_genre.get(tone) or by_lower.get(tone.lower())
            if genre in genres:
                tone_genre[tone] = str(genre)
        return cls(genres=genres, vocabularies=vocab, numeric_attributes=numeric,
                   categorical_attributes=categorical, tone_genre=tone_genre)

    # Columns ------------------------------------------------------------------------
    @cached_property
    def member_features(self) -> tuple[str, ...]:
        return tuple(f"genre_{g}" for g in self.genres) + MEMBER_FIXED

    @cached_property
    def image_features(self) -> tuple[str, ...]:
        attrs = sorted(self.numeric_attributes + self.categorical_attributes)
        return IMAGE_FIXED + tuple(ATTRIBUTE_PREFIX + a for a in attrs)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Every column of the feature matrix, in order."""
        return self.member_features + TITLE_FEATURES + self.image_features + CROSS_FEATURES

    @cached_property
    def categorical(self) -> tuple[str, ...]:
        """The columns LightGBM treats as categories (codes from `code`)."""
        return CATEGORIES + tuple(ATTRIBUTE_PREFIX + a for a in self.categorical_attributes)

    @cached_property
    def index(self) -> dict[str, int]:
        """Column of each feature name."""
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def context_width(self) -> int:
        """Columns shared by every candidate of a title (member, request, title): logged per decision."""
        return len(self.member_features) + len(TITLE_FEATURES)

    @cached_property
    def genre_columns(self) -> tuple[int, ...]:
        return tuple(self.index[f"genre_{g}"] for g in self.genres)

    @cached_property
    def schema_id(self) -> str:
        """Content id of the space, logged with every decision's feature vector."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def _codes(self) -> dict[str, dict[str, int]]:
        return {k: {v: i for i, v in enumerate(vals)} for k, vals in self.vocabularies.items()}

    def code(self, column: str, value: str) -> int:
        """Integer code of a categorical value; a value the space never saw gets len(vocabulary)."""
        codes = self._codes[column]
        return codes.get(value, len(codes))

    def value(self, column: str, code: float) -> str:
        """The value behind a code ("unknown" for the unknown code or a missing one)."""
        vocab = self.vocabularies[column]
        if isinstance(code, float) and math.isnan(code):
            return "unknown"
        k = int(code)
        return vocab[k] if 0 <= k < len(vocab) else "unknown"

    def tone_genre_index(self, tone: str) -> int:
        """Index in `genres` of the genre a tone conveys, or -1."""
        genre = self.tone_genre.get(tone)
        return self.genres.index(genre) if genre in self.genres else -1

    # Storage ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "genres": list(self.genres),
            "vocabularies": {k: list(v) for k, v in sorted(self.vocabularies.items())},
            "numeric_attributes": list(self.numeric_attributes),
            "categorical_attributes": list(self.categorical_attributes),
            "tone_genre": dict(sorted(self.tone_genre.items())),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> FeatureSpace:
        """Read `to_dict` output back; FeatureSpaceError names the key that is wrong."""
        if not isinstance(raw, dict):
            raise FeatureSpaceError("feature space: not a JSON object")
        if raw.get("format") != FORMAT:
            raise FeatureSpaceError(f"feature space: format {raw.get('format')!r} is not {FORMAT!r}")

        def strings(key: str, value: Any) -> tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise FeatureSpaceError(f"feature space: {key} must be a list of strings")
            return tuple(value)

        vocab = raw.get("vocabularies")
        if not isinstance(vocab, dict):
            raise FeatureSpaceError("feature space: vocabularies must be an object")
        tone_genre = raw.get("tone_genre", {})
        if not isinstance(tone_genre, dict) or not all(isinstance(v, str) for v in tone_genre.values()):
            raise FeatureSpaceError("feature space: tone_genre must map strings to strings")
        space = cls(
            genres=strings("genres", raw.get("genres")),
            vocabularies={str(k): strings(f"vocabularies.{k}", v) for k, v in vocab.items()},
            numeric_attributes=strings("numeric_attributes", raw.get("numeric_attributes", [])),
            categorical_attributes=strings("categorical_attributes", raw.get("categorical_attributes", [])),
            tone_genre={str(k): v for k, v in tone_genre.items()},
        )
        missing = [c for c in space.categorical if c not in space.vocabularies]
        if missing:
            raise FeatureSpaceError(f"feature space: vocabularies lacks {', '.join(missing)}")
        return space


def translate_context(x: np.ndarray, src: FeatureSpace, dst: FeatureSpace) -> np.ndarray:
    """Context columns (member, request, title) logged in `src`, laid out as `dst`'s.

    Columns are matched by name and category codes by value, so a decision logged
    under an older catalog's space (or another model's) can be scored by a model of
    a newer one. A column `src` does not have (a genre new to the catalog) is NaN:
    unknown, not zero. Image columns and crosses are not translated: they are rebuilt
    from the catalog (`featurize.candidate_rows`).

    Args:
        x: shape (n, >= src.context_width).

    Returns:
        float32 array, shape (n, dst.context_width).
    """
    out = np.full((len(x), dst.context_width), np.nan, dtype=np.float32)
    for j, name in enumerate(dst.names[: dst.context_width]):
        i = src.index.get(name)
        if i is None:
            continue
        column = x[:, i]
        if name in dst.vocabularies and name in src.vocabularies:
            src_vocab = src.vocabularies[name]
            lookup = np.array([dst.code(name, v) for v in src_vocab] + [len(dst.vocabularies[name])], np.float32)
            codes = np.where(np.isfinite(column), column, len(src_vocab)).astype(np.int64)
            column = lookup[np.clip(codes, 0, len(src_vocab))]
        out[:, j] = column
    return out


__all__ = [
    "ATTRIBUTE_KINDS",
    "ATTRIBUTE_PREFIX",
    "CROSS_FEATURES",
    "IMAGE_FIXED",
    "MEMBER_FIXED",
    "CATEGORIES",
    "TITLE_FEATURES",
    "FeatureSpace",
    "FeatureSpaceError",
    "translate_context",
]
