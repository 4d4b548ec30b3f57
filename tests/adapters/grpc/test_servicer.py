"""The page service never fails a well-formed page: slow or broken features give defaults."""

from __future__ import annotations

import time

import pytest
from tiny import make_member

from keyart.adapters.grpc.servicer import RankerCalls
from keyart.core.page import PageService
from keyart.core.ranker import PolicyConfig
from keyart.v1 import ranking_pb2 as pb


class Members:
    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail

    def get(self, member_id):
        time.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("feature store down")
        return make_member(member_id)


class Sink:
    def __init__(self) -> None:
        self.impressions, self.outcomes = [], []

    def submit_page(self, page):
        self.impressions += page.impressions()
        return True

    def submit_outcomes(self, records):
        self.outcomes += records
        return True


def request() -> pb.RankArtworkRequest:
    return pb.RankArtworkRequest(
        request_id="r", member_id="m1",
        context=pb.RequestContext(country="US", language="en", device=pb.DEVICE_TYPE_WEB),
        titles=[pb.TitleCandidates(title_id=f"t{i}") for i in range(3)],
    )


def handler(tiny_index, tiny_model, members, sink=None, **kw) -> RankerCalls:
    service = PageService(tiny_index, members, PolicyConfig(uniform_explore_share=0.0), sink=sink, **kw)
    service.set_model(tiny_model)
    return RankerCalls(service)


def test_page_is_ranked_and_every_decision_logged(tiny_index, tiny_model):
    sink = Sink()
    h = handler(tiny_index, tiny_model, Members(), sink)
    reply = h.rank(request())
    assert [s.title_id for s in reply.selections] == ["t0", "t1", "t2"]
    assert [i.decision_id for i in sink.impressions] == [s.decision_id for s in reply.selections]
    assert all(i.propensity == s.propensity for i, s in zip(sink.impressions, reply.selections))
    assert sink.impressions[0].device == "WEB" and sink.impressions[0].features


@pytest.mark.parametrize("inline", [False, True])
def test_failing_features_serve_defaults(tiny_index, tiny_model, inline):
    """Read on a worker thread or (a store that bounds its own wait) on the request thread."""
    sink = Sink()
    reply = handler(tiny_index, tiny_model, Members(fail=True), sink, inline_features=inline).rank(request())
    assert [s.fallback_reason for s in reply.selections] == ["features_unavailable"] * 3
    assert [s.image_id for s in reply.selections] == ["t0-i0", "t1-i0", "t2-i0"]
    assert len(sink.impressions) == 3  # fallbacks are logged too (propensity 1)


def test_slow_features_time_out_within_budget(tiny_index, tiny_model):
    h = handler(tiny_index, tiny_model, Members(delay_s=0.5), feature_timeout_s=0.02)
    t0 = time.monotonic()
    reply = h.rank(request())
    assert time.monotonic() - t0 < 0.3
    assert {s.fallback_reason for s in reply.selections} == {"features_unavailable"}


def test_expired_client_deadline_serves_defaults_fast(tiny_index, tiny_model):
    h = handler(tiny_index, tiny_model, Members(delay_s=0.05))
    reply = h.rank(request(), deadline=time.monotonic() + 0.01)
    assert {s.fallback_reason for s in reply.selections} <= {"features_unavailable", "deadline_exceeded"}


def test_serving_and_exploring_without_model(tiny_index):
    """Day one of a catalog: SERVING with no model, every title explored and logged."""
    sink = Sink()
    service = PageService(tiny_index, Members(), PolicyConfig(), sink=sink)
    assert service.ready()
    reply = RankerCalls(service).rank(request())
    assert reply.policy == "uniform" and reply.model_version == ""
    assert [s.fallback_reason for s in reply.selections] == [""] * 3
    assert all(s.propensity == 1 / 5 and s.explored and s.score == 0.0 for s in reply.selections)
    assert all(i.features and i.feature_schema and i.policy == "uniform" and i.model_version == ""
               for i in sink.impressions)


def test_not_ready_without_catalog():
    from keyart.core.featurize import CatalogIndex
    from keyart.domain import Catalog

    assert not PageService(CatalogIndex.build(Catalog(version="empty")), Members(), PolicyConfig()).ready()


def test_unexpected_errors_are_internal_and_logged_once_without_traceback(caplog):
    import logging

    import grpc

    from keyart.adapters.grpc import status

    status.limited._last.clear()

    def fail(member: str) -> None:
        raise KeyError(f"member {member}\nforged log line")

    caplog.set_level(logging.ERROR, logger=status.log.name)
    for _ in range(50):
        try:
            fail("m-secret")
        except KeyError as exc:
            code, details = status.status_for(exc)
    assert code == grpc.StatusCode.INTERNAL and "m-secret" not in details
    lines = [r for r in caplog.records if r.name == status.log.name]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "KeyError at test_servicer.py" in lines[0].getMessage() and "m-secret" not in lines[0].getMessage()
