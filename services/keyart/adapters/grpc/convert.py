"""Protobuf <-> domain conversion with structural validation.

Every structural error raises InvalidRequest naming the field path, so the client
knows exactly what to fix. Semantic problems (unknown titles or images) are not
errors: the ranker serves default artwork for them.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message

from keyart.domain import CropInfo, Outcome, OutcomeKind, RequestContext, Selection, TitleRequest
from keyart.errors import InvalidRequest
from keyart.v1 import ranking_pb2 as pb

MAX_TITLES = 200
MAX_CANDIDATES = 100
MAX_OUTCOMES = 1000
MAX_ID_LENGTH = 128
MAX_SURFACE_LENGTH = 64
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default receive limit; the largest valid page is ~2.7 MB
# google.protobuf.Timestamp's own range, 0001-01-01 to 9999-12-31 (ToDatetime raises outside it).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
# An outcome happened after the epoch and not more than a day ahead of the server's clock.
_OUTCOME_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OUTCOME_FUTURE = timedelta(days=1)

M = TypeVar("M", bound=Message)

_DEVICES = {
    pb.DEVICE_TYPE_TV: "TV",
    pb.DEVICE_TYPE_WEB: "WEB",
    pb.DEVICE_TYPE_MOBILE: "MOBILE",
    pb.DEVICE_TYPE_TABLET: "TABLET",
}
_KINDS = {
    pb.OUTCOME_KIND_IMPRESSION_SEEN: OutcomeKind.IMPRESSION_SEEN,
    pb.OUTCOME_KIND_PLAY_STARTED: OutcomeKind.PLAY_STARTED,
    pb.OUTCOME_KIND_PLAYBACK_PROGRESS: OutcomeKind.PLAYBACK_PROGRESS,
}
_COUNTRY = re.compile(r"[A-Z]{2}")  # fullmatch: "US\n" is not a country
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")


def parse_message(cls: type[M], data: bytes | M) -> M:
    """A request message from the wire bytes (or the message itself, from in-process callers).

    Raises:
        InvalidRequest: the bytes are not a `cls` (truncated, mutated, a string not UTF-8).
    """
    if isinstance(data, cls):
        return data
    try:
        return cls.FromString(data)
    except DecodeError:
        raise InvalidRequest("request", f"does not parse as {cls.DESCRIPTOR.full_name}") from None


def _plain_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidRequest(field, f"longer than {limit} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidRequest(field, f"{value[:40]!r} has control characters or surrounding whitespace")
    return value


def _require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidRequest(field, "must not be empty")
    return _plain_text(value, field, MAX_ID_LENGTH)


def _timestamp(ts: object, present: bool, now: datetime, field: str) -> datetime:
    if not present:
        return now
    seconds, nanos = ts.seconds, ts.nanos  # type: ignore[attr-defined]
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise InvalidRequest(f"{field}.seconds", f"{seconds} is outside 0001-01-01..9999-12-31")
    if not 0 <= nanos <= 999_999_999:
        raise InvalidRequest(f"{field}.nanos", f"must be in 0..999999999, got {nanos}")
    try:
        return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined,no-any-return]
    except (ValueError, OverflowError):  # the last second of 9999, rounded up to microseconds
        raise InvalidRequest(field, f"{seconds}.{nanos:09d} is outside 0001-01-01..9999-12-31") from None


def parse_context(request: pb.RankArtworkRequest, now: datetime) -> RequestContext:
    if not request.HasField("context"):
        raise InvalidRequest("context", "is required")
    ctx = request.context
    if ctx.country and not _COUNTRY.fullmatch(ctx.country):
        raise InvalidRequest("context.country", f"{ctx.country[:40]!r} is not an ISO 3166-1 alpha-2 code")
    if ctx.language and not (len(ctx.language) <= 35 and _LANGUAGE.fullmatch(ctx.language)):
        raise InvalidRequest("context.language", f"{ctx.language[:40]!r} is not a BCP 47 tag")
    _plain_text(ctx.surface, "context.surface", MAX_SURFACE_LENGTH)
    device = _DEVICES.get(ctx.device)
    if device is None:
        raise InvalidRequest("context.device", "must be one of TV, WEB, MOBILE, TABLET")
    return RequestContext(
        country=ctx.country,
        language=ctx.language,
        device=device,
        surface=ctx.surface,
        client_time=_timestamp(ctx.client_time, ctx.HasField("client_time"), now, "context.client_time"),
    )


def _ids_plain(ids: list[str], limit: int) -> bool:
    """Whether every id passes `_require_id`, checked on the whole list at once.

    Equivalent to the per-id check: the concatenation is printable exactly when each id
    is, and the only printable whitespace is the ASCII space, so an id can have
    surrounding whitespace only if some id holds a space (then the caller checks one by one).
    """
    if not ids:
        return True
    if not all(ids) or max(map(len, ids)) > limit:
        return False
    joined = "".join(ids)
    return joined.isprintable() and " " not in joined


def _check_titles(request: pb.RankArtworkRequest) -> None:
    """The per-field checks of a page, naming the first field that fails."""
    seen: dict[str, int] = {}
    for i, t in enumerate(request.titles):
        field = f"titles[{i}]"
        title_id = _require_id(t.title_id, f"{field}.title_id")
        if title_id in seen:
            raise InvalidRequest(
                f"{field}.title_id", f"duplicate of titles[{seen[title_id]}] ({title_id!r})"
            )
        seen[title_id] = i
        m = len(t.candidate_image_ids)
        if m > MAX_CANDIDATES:
            raise InvalidRequest(
                f"{field}.candidate_image_ids", f"at most {MAX_CANDIDATES} candidates, got {m}"
            )
        for j, image_id in enumerate(t.candidate_image_ids):
            _require_id(image_id, f"{field}.candidate_image_ids[{j}]")


# Titles already parsed and found valid, by their wire bytes: a title's candidate list
# comes back on every page that shows it, and reading its 12 ids out of the message
# (a new Python string each) and checking them cost about 2 µs a title. Bounded: full,
# it starts over. Valid alone is valid anywhere, except for a title id that another
# title of the same page has too, which is checked per page.
_VALID_TITLES: dict[bytes, TitleRequest] = {}
VALID_TITLES_MAX = 20_000


def parse_titles(request: pb.RankArtworkRequest) -> list[TitleRequest]:
    n = len(request.titles)
    if n == 0:
        raise InvalidRequest("titles", "at least one title is required")
    if n > MAX_TITLES:
        raise InvalidRequest("titles", f"at most {MAX_TITLES} titles per page, got {n}")
    known = _VALID_TITLES
    keys = [t.SerializeToString() for t in request.titles]
    seen = [known.get(k) for k in keys]
    if None not in seen:
        titles = cast(list[TitleRequest], seen)
        if len({t.title_id for t in titles}) == n:
            return titles
    titles = _parse_titles(request)
    if len(known) + n > VALID_TITLES_MAX:
        known.clear()
    known.update(zip(keys, titles))
    return titles


def _parse_titles(request: pb.RankArtworkRequest) -> list[TitleRequest]:
    """The page's titles read from the message and checked (InvalidRequest names the field)."""
    n = len(request.titles)
    # A valid page (the usual case) is checked in bulk: ~40 titles x 12 candidates one by
    # one cost about 0.25 ms of CPU. Anything the bulk check doubts gets the per-field
    # check, which names the field; the two accept exactly the same pages.
    title_ids = [t.title_id for t in request.titles]
    candidates = [tuple(t.candidate_image_ids) for t in request.titles]
    flat = [i for c in candidates for i in c]
    if not (len(set(title_ids)) == n and max(map(len, candidates)) <= MAX_CANDIDATES
            and _ids_plain(title_ids + flat, MAX_ID_LENGTH)):
        _check_titles(request)
    return [TitleRequest(t, c) for t, c in zip(title_ids, candidates)]


def parse_rank_request(
    request: pb.RankArtworkRequest, now: datetime
) -> tuple[str, RequestContext, list[TitleRequest]]:
    """Validate a RankArtwork request; returns (member_id, context, titles)."""
    member_id = _require_id(request.member_id, "member_id")
    _plain_text(request.request_id, "request_id", MAX_ID_LENGTH)
    return member_id, parse_context(request, now), parse_titles(request)


def _crop(crop: CropInfo | None) -> pb.ArtworkCrop | None:
    if crop is None:
        return None
    return pb.ArtworkCrop(
        variant_image_id=crop.variant_image_id,
        aspect_ratio=crop.aspect_ratio,
        x=crop.x,
        y=crop.y,
        width=crop.width,
        height=crop.height,
        cuts_face=crop.cuts_face,
    )


def to_response(selections: list[Selection], model_version: str, policy: str) -> pb.RankArtworkResponse:
    return pb.RankArtworkResponse(
        selections=[
            pb.ArtworkSelection(
                title_id=s.title_id,
                image_id=s.image_id,
                lineage_id=s.lineage_id,
                propensity=s.propensity,
                score=s.score,
                explored=s.explored,
                decision_id=s.decision_id,
                fallback_reason=s.fallback_reason,
                crop=_crop(s.crop),
            )
            for s in selections
        ],
        model_version=model_version,
        policy=policy,
    )


def parse_outcomes(request: pb.ReportOutcomeRequest, now: datetime) -> list[Outcome]:
    """Validate a ReportOutcome batch; every outcome must be well formed."""
    n = len(request.outcomes)
    if n == 0:
        raise InvalidRequest("outcomes", "at least one outcome is required")
    if n > MAX_OUTCOMES:
        raise InvalidRequest("outcomes", f"at most {MAX_OUTCOMES} outcomes per call, got {n}")
    out = []
    for i, o in enumerate(request.outcomes):
        field = f"outcomes[{i}]"
        kind = _KINDS.get(o.kind)
        if kind is None:
            raise InvalidRequest(f"{field}.kind", "must be IMPRESSION_SEEN, PLAY_STARTED or PLAYBACK_PROGRESS")
        if not math.isfinite(o.minutes_played) or o.minutes_played < 0:
            raise InvalidRequest(f"{field}.minutes_played", f"must be a finite number >= 0, got {o.minutes_played}")
        if not o.HasField("event_time"):
            raise InvalidRequest(f"{field}.event_time", "is required")
        event_time = _timestamp(o.event_time, True, now, f"{field}.event_time")
        if not _OUTCOME_EPOCH <= event_time <= now + _OUTCOME_FUTURE:
            raise InvalidRequest(f"{field}.event_time",
                                 f"{event_time.isoformat()} is before 1970 or more than a day ahead of the server")
        out.append(
            Outcome(
                decision_id=_require_id(o.decision_id, f"{field}.decision_id"),
                member_id=_require_id(o.member_id, f"{field}.member_id"),
                title_id=_require_id(o.title_id, f"{field}.title_id"),
                image_id=_require_id(o.image_id, f"{field}.image_id"),
                kind=kind,
                minutes_played=float(o.minutes_played),
                event_time=event_time,
            )
        )
    return out
