"""Plain domain types shared by the decision core, the feature adapters and the log.

Nothing here imports Ray, gRPC, Feast or Cassandra: those are adapters at the edges
that convert to and from these types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

_T = TypeVar("_T")

# The devices of the API (its request context) and the crop shape each renders. Every
# other vocabulary (country, language, genre, tone, expression, style, palette, a
# customer's own image attributes) is open: it comes from the imported catalog
# (`Catalog.vocabularies`, observed values), never from a code constant.
DEVICES: tuple[str, ...] = ("TV", "WEB", "MOBILE", "TABLET")
# The crop shape each device renders (artwork analysis makes one crop per shape).
DEVICE_ASPECT: dict[str, str] = {"TV": "16:9", "WEB": "16:9", "MOBILE": "2:3", "TABLET": "4:3"}


class OutcomeKind(str, Enum):
    """What the member did after an impression."""

    IMPRESSION_SEEN = "IMPRESSION_SEEN"
    PLAY_STARTED = "PLAY_STARTED"
    PLAYBACK_PROGRESS = "PLAYBACK_PROGRESS"


@dataclass(frozen=True)
class RequestContext:
    """Where and when the page is shown."""

    country: str
    language: str
    device: str  # one of DEVICES
    surface: str
    client_time: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class TitleRequest:
    """One title of the page, in page order; empty candidates mean the catalog pool."""

    title_id: str
    candidate_image_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemberFeatures:
    """What the online feature store knows about a member."""

    member_id: str
    country: str
    language: str
    main_device: str
    tenure_days: float
    genre_affinity: Mapping[str, float]  # genre -> recency-weighted viewing share (the catalog's genres)
    actor_affinity: Mapping[str, float]  # top actors -> log-lift of exposure over the population (> 0)
    interacted_titles: frozenset[str] = frozenset()  # titles watched or started
    history_views: float = 0.0  # viewing events behind the shares (few: the shares are mostly prior)
    history_minutes: float = 0.0


@dataclass(frozen=True)
class ImageInfo:
    """Attributes of one artwork image (measured by artwork analysis or supplied).

    Categorical values are open (whatever the catalog uses; "" means unknown). A
    measure the catalog did not supply is NaN (unknown), which the model treats as
    missing rather than as a value.
    """

    image_id: str
    title_id: str
    lineage_id: str
    num_faces: int
    face_area: float  # share of the frame covered by the largest face, 0..1 (NaN: unknown)
    expression: str  # for example "happy", "intense" ("": unknown)
    villain_shown: bool
    cast_shown: tuple[str, ...]
    group_size: int  # people visible
    brightness: float  # 0..1 (NaN: unknown)
    warmth: float  # -1 (cool) .. 1 (warm) (NaN: unknown)
    contrast: float  # 0..1 (NaN: unknown)
    tone: str  # the genre feel it conveys, matched to the member's genre taste ("": unknown)
    style: str  # for example "closeup", "scene" ("": unknown)
    palette: str  # dominant palette ("": unknown)
    text_present: bool
    theme_tags: tuple[str, ...] = ()
    active: bool = True
    # The customer's own attributes (for example from their computer-vision tagger),
    # declared in the catalog: name -> number (NaN: unknown) or category ("": unknown).
    attributes: Mapping[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class TitleInfo:
    """A catalog title and its artwork pool."""

    title_id: str
    name: str
    genres: tuple[str, ...]
    cast: tuple[str, ...]
    default_image_id: str
    image_ids: tuple[str, ...]  # the title's images in id order (see Catalog.pool for the choosable ones)
    villain_actor: str | None = None
    runtime_minutes: float = 100.0


@dataclass(frozen=True)
class CropInfo:
    """Where an analysed image is cropped for one aspect ratio (source pixels)."""

    aspect_ratio: str  # for example "16:9"
    variant_image_id: str  # the crop served as its own image; shares the source lineage
    x: int
    y: int
    width: int
    height: int
    cuts_face: bool = False  # True only when no crop of this ratio could avoid it


@dataclass
class Catalog:
    """Titles and images by id; an in-process cache on the request path."""

    titles: dict[str, TitleInfo] = field(default_factory=dict)
    images: dict[str, ImageInfo] = field(default_factory=dict)
    version: str = ""
    crops: dict[str, dict[str, CropInfo]] = field(default_factory=dict)  # image_id -> ratio -> crop
    # Values of the open vocabularies the images and titles do not show: the members'
    # countries and languages (observed in members.parquet, plus those the manifest
    # declares), for example {"country": ("NZ", "US"), "language": ("en", "mi")}.
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The customer's image attributes: name -> "numeric" or "categorical".
    image_attributes: dict[str, str] = field(default_factory=dict)
    # Tone -> the genre it conveys, where the tone is not itself a genre name.
    tone_genre: dict[str, str] = field(default_factory=dict)

    def pool(self, title_id: str) -> tuple[str, ...]:
        """The images of a title a policy may choose: known to the catalog and active, in id order.

        This is the one pool rule: serving, simulation and offline evaluation all call it.
        An inactive default image is not in the pool (artists retired it), but it is
        still what a fallback serves.
        """
        title = self.titles.get(title_id)
        if title is None:
            return ()
        images = self.images
        return tuple(i for i in title.image_ids if i in images and images[i].active)

    def lineages(self) -> dict[str, str]:
        """Each image's lineage id: the versions (crops, text variants) of one artwork share it."""
        return {i.image_id: i.lineage_id for i in self.images.values()}

    def crop_for_device(self, image_id: str, device: str) -> CropInfo | None:
        """The crop of image_id shown on device, if the image has been analysed."""
        by_ratio = self.crops.get(image_id)
        return by_ratio.get(DEVICE_ASPECT.get(device, "")) if by_ratio else None


FEATURE_DTYPE = "<f4"
"""A logged feature row is one float32 per feature, little-endian, as bytes (`FeatureRow`):
what the log stores and the model consumes, encoded once per page. A tuple of 43 Python
floats per decision held 1,416 bytes in the writer's queue against 205, and was encoded
again at every hop."""

FeatureRow = bytes


@dataclass(frozen=True)
class Selection:
    """The image chosen for one title of the page."""

    title_id: str
    image_id: str
    lineage_id: str
    propensity: float  # probability the policy had of choosing this image, in (0, 1]
    score: float  # predicted quality-play probability
    explored: bool  # True when the policy did not pick its greedy best
    decision_id: str
    fallback_reason: str = ""  # empty unless the default image was served
    position: int = 0
    # Model inputs of the chosen candidate, for the log: a FeatureRow (b"": none).
    features: bytes = b""
    crop: CropInfo | None = None  # the crop for the requesting device, when analysed


@dataclass(frozen=True)
class ShadowChoice:
    """What a shadow model would have done for one served decision (never shown).

    With the served propensity these give its exact off-policy value: IPS weighs the
    served image's reward by `served_propensity / propensity served`, and DR adds the
    shadow's own expectation `expected_score` with `served_score` as its control variate.
    """

    name: str  # the shadow's name in the experiment
    model_version: str
    image_id: str  # the shadow's greedy choice among the same candidates
    propensity: float  # the shadow policy's probability of its greedy choice
    served_propensity: float  # the shadow policy's probability of the image really served
    expected_score: float  # sum over candidates of shadow probability x shadow score
    served_score: float  # the shadow model's score of the image really served


@dataclass(frozen=True)
class Impression:
    """One logged decision: what was shown, to whom, where, with which probability."""

    decision_id: str
    request_id: str
    member_id: str
    title_id: str
    image_id: str
    lineage_id: str
    propensity: float
    score: float
    explored: bool
    policy: str
    model_version: str
    position: int
    country: str
    language: str
    device: str
    surface: str
    decided_at: datetime
    fallback_reason: str = ""
    feature_schema: str = ""  # id of the ordered feature-name list `features` follows
    features: bytes = b""  # a FeatureRow (b"": none, e.g. default artwork)
    # The member's top actors as served: with `features` they let offline evaluation
    # rebuild the features of every other candidate image (cast crosses included).
    actor_affinity: tuple[tuple[str, float], ...] = ()
    # The online experiment the member is in (both "" outside one), and what each of its
    # shadow models would have chosen for this decision.
    experiment: str = ""
    cell: str = ""
    shadows: tuple[ShadowChoice, ...] = ()
    latency_ms: float = 0.0  # the page's time in the service until its choices were made


def _fields_and_defaults(cls: type) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The dataclass's fields, and the defaults of those that have one (TypeError for a
    default factory: a shared prepared dict cannot call it per record)."""
    defaults: dict[str, Any] = {}
    all_fields = fields(cls)
    for f in all_fields:
        if f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} has a default factory: use the constructor")
        if f.default is not MISSING:
            defaults[f.name] = f.default
    return all_fields, defaults


def frozen_builder(cls: type[_T]) -> Callable[..., _T]:
    """A fast keyword constructor of the frozen dataclass `cls`, for records built by the
    thousand per second (a page builds 40 `Selection`s and 40 `Impression`s).

    A frozen dataclass's own __init__ sets every field through object.__setattr__: 2.7 µs
    for Impression's 25 fields. This one hands its keyword dict to the instance (1.1 µs,
    most of it building that dict); the instance is the same frozen, comparable, hashable
    record. It checks nothing: callers pass field names only (the tests compare it with
    the real constructor), and a field left out takes its default.
    """
    all_fields, defaults = _fields_and_defaults(cls)
    count = len(all_fields)
    new, set_attribute = object.__new__, object.__setattr__

    def build(**values: Any) -> _T:
        if len(values) != count:
            values = {**defaults, **values}
        obj = new(cls)
        set_attribute(obj, "__dict__", values)  # the fresh keyword dict becomes the instance's
        return obj

    build.__name__ = f"build_{cls.__name__}"
    return build


BatchBuilder = Callable[[Mapping[str, Any], tuple[str, ...], Iterable[tuple[Any, ...]]], list[_T]]


def frozen_batch_builder(cls: type[_T]) -> BatchBuilder[_T]:
    """Like :func:`frozen_builder`, for many records that share most of their fields (the
    40 impressions of one page share member, context, model and time).

    ``build_all(shared, names, rows)``: one record per row, with the fields ``shared``,
    then ``names[i] = row[i]``; fields in neither take their defaults. Each record's
    dict is a copy of one prepared dict, updated from its row in C (0.35x the keyword
    builder's time per record). Raises TypeError for a field name the class does not
    have or a required field missing from both.
    """
    all_fields, defaults = _fields_and_defaults(cls)
    known = frozenset(f.name for f in all_fields)
    required = known - defaults.keys()
    new, set_attribute = object.__new__, object.__setattr__

    def build_all(shared: Mapping[str, Any], names: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> list[_T]:
        given = shared.keys() | set(names)
        if not given <= known or not required <= given:
            raise TypeError(f"{cls.__name__}: unknown fields {sorted(given - known)}, "
                            f"missing fields {sorted(required - given)}")
        base = {**defaults, **shared}
        out = []
        for row in rows:
            values = base.copy()
            values.update(zip(names, row))
            obj = new(cls)
            set_attribute(obj, "__dict__", values)
            out.append(obj)
        return out

    build_all.__name__ = f"build_all_{cls.__name__}"
    return build_all


@dataclass(frozen=True)
class Outcome:
    """What the member did after a decision."""

    decision_id: str
    member_id: str
    title_id: str
    image_id: str
    kind: OutcomeKind
    minutes_played: float
    event_time: datetime


build_selection = frozen_builder(Selection)
build_impression = frozen_builder(Impression)
build_impressions = frozen_batch_builder(Impression)


@dataclass(frozen=True)
class LoggedPage:
    """A page's impressions as the page service hands them to the log: the fields its
    decisions share (member, context, model, time), once, and one row per decision of
    the fields `names` lists. A log that keeps a page as a page (the writer process's
    journal) never builds the 40 `Impression` objects; any other takes `impressions()`."""

    shared: Mapping[str, Any]
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def impressions(self) -> list[Impression]:
        """One Impression per row (TypeError for a field Impression does not have, a
        required one missing, or a row whose length is not that of `names`)."""
        width = len(self.names)
        if any(len(row) != width for row in self.rows):
            raise TypeError(f"LoggedPage: a row's length differs from its {width} field names")
        return build_impressions(self.shared, self.names, self.rows)

    def __len__(self) -> int:
        return len(self.rows)
