"""Structural validation: every bad input names its field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyart.adapters.grpc import convert
from keyart.errors import InvalidRequest
from keyart.v1 import ranking_pb2 as pb

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def request(**overrides) -> pb.RankArtworkRequest:
    r = pb.RankArtworkRequest(
        request_id="r1",
        member_id="m00001",
        context=pb.RequestContext(country="US", language="en-US", device=pb.DEVICE_TYPE_TV, surface="home"),
        titles=[pb.TitleCandidates(title_id="t0001"), pb.TitleCandidates(title_id="t0002")],
    )
    for key, value in overrides.items():
        if key == "titles":
            del r.titles[:]
            r.titles.extend(value)
        elif key == "no_context":
            r.ClearField("context")
        elif key.startswith("context."):
            setattr(r.context, key.split(".", 1)[1], value)
        else:
            setattr(r, key, value)
    return r


def titles(n: int) -> list[pb.TitleCandidates]:
    return [pb.TitleCandidates(title_id=f"t{i}") for i in range(n)]


BAD = [
    ("empty member", {"member_id": ""}, "member_id", "must not be empty"),
    ("no titles", {"titles": []}, "titles", "at least one title"),
    ("201 titles", {"titles": titles(201)}, "titles", "at most 200 titles per page, got 201"),
    ("101 candidates",
     {"titles": [pb.TitleCandidates(title_id="t", candidate_image_ids=[f"i{k}" for k in range(101)])]},
     "titles[0].candidate_image_ids", "at most 100 candidates, got 101"),
    ("duplicate title", {"titles": titles(3) + [pb.TitleCandidates(title_id="t1")]}, "titles[3].title_id",
     "duplicate of titles[1]"),
    ("empty title id", {"titles": [pb.TitleCandidates(title_id="")]}, "titles[0].title_id", "must not be empty"),
    ("empty candidate id", {"titles": [pb.TitleCandidates(title_id="t", candidate_image_ids=["i", ""])]},
     "titles[0].candidate_image_ids[1]", "must not be empty"),
    ("unspecified device", {"context.device": pb.DEVICE_TYPE_UNSPECIFIED}, "context.device", "TV, WEB, MOBILE, TABLET"),
    ("no context", {"no_context": True}, "context", "is required"),
    ("bad country", {"context.country": "usa"}, "context.country", "ISO 3166-1 alpha-2"),
    ("bad language", {"context.language": "english please"}, "context.language", "BCP 47"),
    ("huge member id", {"member_id": "m" * 500}, "member_id", "longer than"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_field(case):
    _, overrides, field, message = case
    with pytest.raises(InvalidRequest) as err:
        convert.parse_rank_request(request(**overrides), NOW)
    assert err.value.field == field
    assert message in str(err.value)


def test_good_request_parses():
    member, ctx, page = convert.parse_rank_request(request(), NOW)
    assert member == "m00001"
    assert ctx.device == "TV" and ctx.client_time == NOW
    assert [t.title_id for t in page] == ["t0001", "t0002"]


def test_exactly_200_titles_and_100_candidates_are_fine():
    r = request(titles=[pb.TitleCandidates(title_id=f"t{i}", candidate_image_ids=[f"i{k}" for k in range(100)])
                        for i in range(200)])
    assert len(convert.parse_rank_request(r, NOW)[2]) == 200


@given(
    member=st.text(max_size=140),
    ids=st.lists(st.text(max_size=5), max_size=8),
    device=st.integers(min_value=0, max_value=6),
)
def test_parser_either_accepts_or_names_a_field(member, ids, device):
    r = pb.RankArtworkRequest(member_id=member, context=pb.RequestContext(device=device),
                              titles=[pb.TitleCandidates(title_id=i) for i in ids])
    try:
        m, ctx, page = convert.parse_rank_request(r, NOW)
    except InvalidRequest as exc:
        assert exc.field.split("[")[0].split(".")[0] in {"member_id", "context", "titles"}
    else:
        assert m == member and len(page) == len(ids) == len(set(ids)) > 0


# Ids that probe every edge of the per-id rule: spaces inside and around, other
# whitespace, control and format characters, empty ids, the length limit and duplicates.
_ID_CHARS = st.sampled_from(["a", "b", "7", " ", "\t", "\n", "\x00", "\u00a0", "\u200b", "\u3000", "\u00e9",
                             "\U0001f600"])
_IDS = st.one_of(st.text(_ID_CHARS, max_size=4), st.sampled_from(["", "x" * 128, "x" * 129, " x", "x "]))


@given(
    title_ids=st.lists(_IDS, min_size=1, max_size=6),
    candidates=st.lists(st.lists(_IDS, max_size=5), min_size=6, max_size=6),
)
def test_bulk_title_check_accepts_and_refuses_what_the_per_field_check_does(title_ids, candidates):
    r = pb.RankArtworkRequest(titles=[pb.TitleCandidates(title_id=t, candidate_image_ids=c)
                                      for t, c in zip(title_ids, candidates)])
    try:
        convert._check_titles(r)  # the reference: one field at a time
        expected = None
    except InvalidRequest as exc:
        expected = (exc.field, str(exc))
    for _ in range(2):  # the second time, a valid page's titles come from the cache of valid titles
        try:
            page = convert.parse_titles(r)
            got = None
        except InvalidRequest as exc:
            got = (exc.field, str(exc))
        assert got == expected
        if got is None:
            assert [(t.title_id, list(t.candidate_image_ids)) for t in page] == \
                [(t, c) for t, c in zip(title_ids, candidates)]


def test_cached_titles_are_still_checked_for_duplicates_on_their_page(monkeypatch):
    a, b = pb.TitleCandidates(title_id="a", candidate_image_ids=["i1"]), pb.TitleCandidates(title_id="b")
    first = convert.parse_titles(pb.RankArtworkRequest(titles=[a, b]))
    again = convert.parse_titles(pb.RankArtworkRequest(titles=[b, a]))
    assert again == first[::-1] and again[0] is first[1]  # the same (immutable) records, from the cache
    with pytest.raises(InvalidRequest) as exc:
        convert.parse_titles(pb.RankArtworkRequest(titles=[a, b, a]))
    assert exc.value.field == "titles[2].title_id" and "duplicate of titles[0]" in str(exc.value)
    monkeypatch.setattr(convert, "VALID_TITLES_MAX", 3)  # bounded: full, it starts over
    for k in range(5):
        convert.parse_titles(pb.RankArtworkRequest(titles=[pb.TitleCandidates(title_id=f"t{k}")]))
    assert 1 <= len(convert._VALID_TITLES) <= 3


OUTCOME_BAD = [
    ("empty batch", [], "outcomes", "at least one"),
    ("no kind", [pb.Outcome(decision_id="d", member_id="m", title_id="t", image_id="i")],
     "outcomes[0].kind", "must be"),
    ("negative minutes", [pb.Outcome(decision_id="d", member_id="m", title_id="t", image_id="i",
                                     kind=pb.OUTCOME_KIND_PLAYBACK_PROGRESS, minutes_played=-1)],
     "outcomes[0].minutes_played", ">= 0"),
    ("no event time", [pb.Outcome(decision_id="d", member_id="m", title_id="t", image_id="i",
                                  kind=pb.OUTCOME_KIND_PLAY_STARTED)], "outcomes[0].event_time", "required"),
]


@pytest.mark.parametrize("case", OUTCOME_BAD, ids=[c[0] for c in OUTCOME_BAD])
def test_bad_outcomes_name_the_field(case):
    _, outcomes, field, message = case
    with pytest.raises(InvalidRequest) as err:
        convert.parse_outcomes(pb.ReportOutcomeRequest(outcomes=outcomes), NOW)
    assert err.value.field == field and message in str(err.value)
