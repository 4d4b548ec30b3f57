"""Keyed member pseudonyms in the decision log: no member id is logged, impressions and
outcomes of one member share one pseudonym, and another key gives other pseudonyms."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tiny import make_context, make_member

from keyart.core.page import PageRequest, PageService
from keyart.core.pseudonym import keyed_pseudonym
from keyart.core.ranker import PolicyConfig
from keyart.domain import MemberFeatures, Outcome, OutcomeKind, TitleRequest
from keyart.settings import KeyartSettings

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


class _Members:
    def get(self, member_id: str) -> MemberFeatures:
        return make_member(member_id)


class _Sink:
    def __init__(self) -> None:
        self.impressions: list = []
        self.outcomes: list = []

    def submit_page(self, page) -> None:
        self.impressions.extend(page.impressions())

    def submit_outcomes(self, outcomes) -> None:
        self.outcomes.extend(outcomes)


def _serve(tiny_index, tiny_model, key: bytes | None) -> _Sink:
    sink = _Sink()
    service = PageService(tiny_index, _Members(), PolicyConfig(), sink=sink,  # type: ignore[arg-type]
                          log_member_id=keyed_pseudonym(key) if key else None)
    service.set_model(tiny_model)
    for member in ("alice", "bob"):
        result = service.rank(PageRequest(f"r-{member}", member, make_context(), [TitleRequest("t0"),
                                                                                 TitleRequest("t1")]), now=NOW)
        s = result.selections[0]
        service.report([Outcome(s.decision_id, member, s.title_id, s.image_id, OutcomeKind.PLAY_STARTED, 0.0, NOW)])
    service.close()
    return sink


def test_the_log_holds_pseudonyms_consistent_across_impressions_and_outcomes(tiny_index, tiny_model) -> None:
    plain = _serve(tiny_index, tiny_model, None)
    assert {r.member_id for r in plain.impressions} == {"alice", "bob"}
    sink = _serve(tiny_index, tiny_model, b"k" * 32)
    logged = {r.member_id for r in sink.impressions} | {o.member_id for o in sink.outcomes}
    assert len(logged) == 2 and not logged & {"alice", "bob"}
    assert all(m.startswith("ps-") and len(m) == 35 for m in logged)
    by_decision = {r.decision_id: r.member_id for r in sink.impressions}
    assert all(by_decision[o.decision_id] == o.member_id for o in sink.outcomes)
    other = _serve(tiny_index, tiny_model, b"z" * 32)
    assert not {r.member_id for r in other.impressions} & logged
    # The choices themselves do not change: serving uses the real id.
    assert [r.image_id for r in sink.impressions] == [r.image_id for r in plain.impressions]


def test_a_short_key_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        keyed_pseudonym(b"short")
    with pytest.raises(ValueError, match="KEYART_LOG_MEMBER_KEY"):
        KeyartSettings(data_dir=tmp_path, log_member_key="short")
    assert "s3cret" not in repr(KeyartSettings(data_dir=tmp_path, log_member_key="s3cret-s3cret-s3cret"))
