"""Hypothesis strategies for fuzzing keyart.v1.ArtworkRanker on the wire, and the check
every answer must pass: OK, or INVALID_ARGUMENT whose details name a field.

Cases are wire bytes: well-typed messages with hostile values (any int for enums and
timestamps, non-finite floats, control characters, long strings), those bytes mutated
(flipped, cut, spliced), and raw bytes. Valid pages are mixed in so the OK path is fuzzed too.
"""

from __future__ import annotations

import re

import grpc
from hypothesis import strategies as st

from keyart.v1 import ranking_pb2 as pb

RANK = "/keyart.v1.ArtworkRanker/RankArtwork"
REPORT = "/keyart.v1.ArtworkRanker/ReportOutcome"
# "titles[3].candidate_image_ids[0]: ...", "context.client_time.nanos: ...", "request: ..."
FIELD_DETAILS = re.compile(r"[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S")

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=120, max_size=200),
    st.sampled_from(["", "m1", "t1", "US", "en", "en-US", "US\n", " t1", "home", "x" * 129]),
)


def _mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """`good` nine times in ten, so that most messages reach the page and only a field or
    two is hostile."""
    return st.integers(0, 9).flatmap(lambda k: bad if k == 0 else good)


def _timestamp() -> st.SearchStrategy[dict[str, int]]:
    plausible = st.fixed_dictionaries({"seconds": st.integers(1_700_000_000, 1_790_000_000),
                                       "nanos": st.integers(0, 999_999_999)})
    return _mostly(plausible, st.fixed_dictionaries({"seconds": _INT64, "nanos": _INT32}))


def _ids(names: list[str]) -> st.SearchStrategy[str]:
    return _mostly(st.sampled_from(names), _TEXT) if names else _TEXT


def rank_requests(titles: list[str], images: list[str]) -> st.SearchStrategy[pb.RankArtworkRequest]:
    """RankArtwork messages: catalog ids mixed with hostile ones, any enum and timestamp."""

    @st.composite
    def build(draw: st.DrawFn) -> pb.RankArtworkRequest:
        r = pb.RankArtworkRequest(
            request_id=draw(_mostly(st.just("r-1"), _TEXT)), member_id=draw(_ids(["m00001", "m00002", "new-member"])))
        if draw(st.integers(0, 9)):  # one in ten has no context
            ctx = r.context
            ctx.country = draw(_mostly(st.sampled_from(["US", "GB", "BR", ""]), _TEXT))
            ctx.language = draw(_mostly(st.sampled_from(["en", "en-US", "pt-BR", ""]), _TEXT))
            ctx.device = draw(_mostly(st.integers(1, 4), _INT32))
            ctx.surface = draw(_mostly(st.sampled_from(["home", "search", ""]), _TEXT))
            if draw(st.booleans()):
                ts = draw(_timestamp())
                ctx.client_time.seconds, ctx.client_time.nanos = ts["seconds"], ts["nanos"]
        for title_id in draw(st.lists(_ids(titles), min_size=1, max_size=6, unique=True)):
            t = r.titles.add(title_id=title_id)
            t.candidate_image_ids.extend(draw(_mostly(st.just([]), st.lists(_ids(images), max_size=4))))
        return r

    return build()


def outcome_requests(titles: list[str], images: list[str]) -> st.SearchStrategy[pb.ReportOutcomeRequest]:
    """ReportOutcome batches: any kind, any float minutes, any event time."""

    @st.composite
    def build(draw: st.DrawFn) -> pb.ReportOutcomeRequest:
        r = pb.ReportOutcomeRequest()
        for _ in range(draw(_mostly(st.integers(1, 3), st.integers(0, 4)))):
            o = r.outcomes.add(
                decision_id=draw(_mostly(st.uuids().map(str), _TEXT)), member_id=draw(_ids(["m00001"])),
                title_id=draw(_ids(titles)), image_id=draw(_ids(images)),
                kind=draw(_mostly(st.integers(1, 3), _INT32)),
                minutes_played=draw(_mostly(st.floats(0, 300), st.floats(allow_nan=True, allow_infinity=True))))
            if draw(_mostly(st.just(True), st.just(False))):
                ts = draw(_timestamp())
                o.event_time.seconds, o.event_time.nanos = ts["seconds"], ts["nanos"]
        return r

    return build()


@st.composite
def _mutated(draw: st.DrawFn, messages: st.SearchStrategy) -> bytes:
    data = bytearray(draw(messages).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "utf8"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:  # a string field (tag 2, length 2) holding bytes that are not UTF-8
            data[at:at] = b"\x12\x02\xff\xfe"
    return bytes(data)


def wire_cases(messages: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """Serialized messages, the same mutated, and raw bytes."""
    whole = messages.map(lambda m: m.SerializeToString())
    return st.integers(0, 5).flatmap(
        lambda k: whole if k < 4 else (_mutated(messages) if k == 4 else st.binary(max_size=512)))


def call_raw(channel: grpc.Channel, method: str, data: bytes, timeout: float = 30.0) -> tuple[grpc.StatusCode, str]:
    """Send bytes as they are; the status code and details of the answer."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        call(data, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def assert_clean(code: grpc.StatusCode, details: str, data: bytes) -> None:
    """OK, or INVALID_ARGUMENT naming a field; never UNKNOWN or INTERNAL or a leaked type."""
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details, data[:200])
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert FIELD_DETAILS.match(details), (details, data[:200])
        assert "Traceback" not in details and "Error" not in details.split(":")[0], details
