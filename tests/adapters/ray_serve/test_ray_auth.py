"""Tokens through the real ingress (HAProxy, Serve's proxy, a replica): the
`authorization` metadata reaches the replica, which answers UNAUTHENTICATED or
PERMISSION_DENIED; a token file that cannot be used is refused before Ray starts."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyart.errors import AuthConfigError
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

pytestmark = pytest.mark.integration


def test_tokens_are_checked_by_the_replica(platform_settings, tmp_path) -> None:
    from platform_data import free_port

    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.ray_serve.launch import start_serve, stop_serve

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n"
                      f"  - {{name: ui, sha256: {hashlib.sha256(b'ui-secret').hexdigest()}, methods: [RankArtwork]}}\n")
    settings = platform_settings.model_copy(update={"auth_tokens_file": tokens, "grpc_port": free_port()})
    with pytest.raises(AuthConfigError, match="broken.yaml"):
        (tmp_path / "broken.yaml").write_text("tokens: [{name: x}]\n")
        start_serve(settings.model_copy(update={"auth_tokens_file": tmp_path / "broken.yaml"}))
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    address = start_serve(settings, replicas=1)
    try:
        titles = sorted(load_catalog(settings.world_dir).titles)[:3]
        page = pb.RankArtworkRequest(member_id="m00001", context=pb.RequestContext(device=pb.DEVICE_TYPE_TV),
                                     titles=[pb.TitleCandidates(title_id=t) for t in titles])
        with grpc.insecure_channel(address) as channel:
            stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
            for metadata, code in (([], grpc.StatusCode.UNAUTHENTICATED),
                                   ([("authorization", "Bearer nope")], grpc.StatusCode.UNAUTHENTICATED)):
                with pytest.raises(grpc.RpcError) as err:
                    stub.RankArtwork(page, metadata=metadata, timeout=10)
                assert err.value.code() == code
            ok = [("authorization", "Bearer ui-secret")]
            assert len(stub.RankArtwork(page, metadata=ok, timeout=10).selections) == 3
            with pytest.raises(grpc.RpcError) as err:
                stub.ReportOutcome(pb.ReportOutcomeRequest(), metadata=ok, timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop_serve()
