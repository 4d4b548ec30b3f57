"""Fuzzing the bare grpc.aio server on loopback: every answer is OK or INVALID_ARGUMENT
naming a field (RESOURCE_EXHAUSTED above the message limit), and the server keeps serving."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from fuzz_messages import RANK, REPORT, assert_clean, call_raw, outcome_requests, rank_requests, wire_cases
from hypothesis import HealthCheck, given, settings
from tiny import make_member

from keyart.adapters.grpc.convert import MAX_MESSAGE_BYTES
from keyart.adapters.grpc.server import start_bare_server
from keyart.core.page import PageService
from keyart.core.ranker import PolicyConfig
from keyart.v1 import ranking_pb2 as pb

FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Members:
    def get(self, member_id):
        return make_member(member_id) if member_id.startswith("m0") else None


class Sink:
    def __init__(self) -> None:
        self.impressions, self.outcomes = 0, 0

    def submit_page(self, page):
        self.impressions += len(page.impressions())
        return True

    def submit_outcomes(self, records):
        self.outcomes += len(records)
        return True


@pytest.fixture(scope="module")
def channel(tiny_index, tiny_model):
    service = PageService(tiny_index, Members(), PolicyConfig(), sink=Sink())
    service.set_model(tiny_model)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-grpc", daemon=True)
    thread.start()
    server, port = asyncio.run_coroutine_threadsafe(start_bare_server(service, "127.0.0.1:0"), loop).result(30)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _ids(tiny_index):
    return sorted(tiny_index.catalog.titles), sorted(tiny_index.catalog.images)


@pytest.mark.parametrize(("method", "messages"), [(RANK, rank_requests), (REPORT, outcome_requests)],
                         ids=["RankArtwork", "ReportOutcome"])
def test_fuzzed_messages_get_ok_or_invalid_argument(channel, tiny_index, method, messages) -> None:
    titles, images = _ids(tiny_index)

    @FUZZ
    @given(wire_cases(messages(titles, images)))
    def check(data: bytes) -> None:
        assert_clean(*call_raw(channel, method, data), data)

    check()


@pytest.mark.parametrize(("data", "field"), [
    (b"\xff\xff\xff", "request: does not parse as keyart.v1.RankArtworkRequest"),
    (b"\x12\x02\xff\xfe", "request: does not parse"),  # member_id holding bytes that are not UTF-8
])
def test_bytes_that_do_not_parse_are_invalid_argument(channel, data, field) -> None:
    code, details = call_raw(channel, RANK, data)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (code, details)
    assert "DecodeError" not in details


def test_out_of_range_timestamps_name_the_field(channel) -> None:
    r = pb.RankArtworkRequest(member_id="m00001", context=pb.RequestContext(device=pb.DEVICE_TYPE_TV),
                              titles=[pb.TitleCandidates(title_id="t0")])
    r.context.client_time.nanos = 1_870_014_459
    code, details = call_raw(channel, RANK, r.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("context.client_time.nanos:")
    o = pb.ReportOutcomeRequest(outcomes=[pb.Outcome(decision_id="d", member_id="m", title_id="t", image_id="i",
                                                     kind=pb.OUTCOME_KIND_PLAY_STARTED)])
    o.outcomes[0].event_time.seconds = -(2**40)
    code, details = call_raw(channel, REPORT, o.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("outcomes[0].event_time.seconds:")


def test_oversize_message_is_resource_exhausted_and_the_server_serves_on(channel) -> None:
    code, _ = call_raw(channel, RANK, b"\x0a" + b"\xff" * (MAX_MESSAGE_BYTES + 16))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = pb.RankArtworkRequest(member_id="m00001", context=pb.RequestContext(device=pb.DEVICE_TYPE_TV),
                               titles=[pb.TitleCandidates(title_id="t0")])
    assert call_raw(channel, RANK, ok.SerializeToString())[0] == grpc.StatusCode.OK
