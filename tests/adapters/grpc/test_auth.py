"""Bearer tokens on the bare gRPC server: UNAUTHENTICATED without a known token,
PERMISSION_DENIED for a method the token may not call; health stays open."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tiny import make_member

from keyart.adapters.grpc.auth import TokenAuth
from keyart.adapters.grpc.server import start_bare_server
from keyart.core.page import PageService
from keyart.core.ranker import PolicyConfig
from keyart.errors import AuthConfigError
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        f"  - {{name: ui-tier, sha256: {_digest('ui-secret')}}}\n"
        f"  - {{name: events, sha256: {_digest('events-secret')}, methods: [ReportOutcome]}}\n")
    return path


@pytest.fixture(scope="module")
def channel(tiny_index, tiny_model, token_file):
    class Members:
        def get(self, member_id):
            return make_member(member_id)

    service = PageService(tiny_index, Members(), PolicyConfig())
    service.set_model(tiny_model)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    start = start_bare_server(service, "127.0.0.1:0", TokenAuth.from_file(token_file))
    server, port = asyncio.run_coroutine_threadsafe(start, loop).result(30)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _page() -> pb.RankArtworkRequest:
    return pb.RankArtworkRequest(member_id="m1", context=pb.RequestContext(device=pb.DEVICE_TYPE_TV),
                                 titles=[pb.TitleCandidates(title_id="t0")])


def _code(call, request, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    try:
        call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("token", "rank", "report"), [
    (None, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
    ("wrong", grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
    ("ui-secret", grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT),  # authorised; the batch is empty
    ("events-secret", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_tokens_decide_who_calls_what(channel, token, rank, report) -> None:
    stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
    assert _code(stub.RankArtwork, _page(), token) == rank
    assert _code(stub.ReportOutcome, pb.ReportOutcomeRequest(), token) == report


def test_health_needs_no_token(channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_denial_says_why_without_the_token(channel) -> None:
    stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.RankArtwork(_page(), metadata=[("authorization", "Bearer events-secret")], timeout=10)
    assert "'events' may not call RankArtwork" in err.value.details()
    assert "events-secret" not in err.value.details()


@pytest.mark.parametrize(("content", "says"), [
    ({"tokens": []}, "tokens: List should have at least 1 item"),
    ({"tokens": [{"name": "a", "sha256": "abc"}]}, "tokens.0.sha256"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64, "methods": ["Rank"]}]}, "tokens.0.methods: Rank is not"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64}, {"name": "b", "sha256": "0" * 64}]}, "tokens.1.sha256"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64, "token": "x"}]}, "tokens.0.token"),
])
def test_a_bad_token_file_is_refused_naming_file_and_field(tmp_path, content, says) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(content))
    with pytest.raises(AuthConfigError) as err:
        TokenAuth.from_file(path)
    assert str(path) in str(err.value) and says in str(err.value), str(err.value)
