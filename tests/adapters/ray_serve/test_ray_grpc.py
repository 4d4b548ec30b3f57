"""The real thing: Ray Serve's gRPC ingress on loopback, real Feast, real LightGBM, real log."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_address(platform_settings):
    import os

    from platform_data import free_port

    from keyart.adapters.ray_serve.launch import start_serve, stop_serve

    # HAProxy's own metrics and stats ports too: a `make run` on this machine must not clash.
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    address = start_serve(platform_settings, replicas=1)
    yield address
    stop_serve()


@pytest.fixture(scope="module")
def stub(ray_address):
    with grpc.insecure_channel(ray_address) as channel:
        yield ranking_pb2_grpc.ArtworkRankerStub(channel)


def page_request(settings, n_titles=8, member="m00001", device=pb.DEVICE_TYPE_MOBILE) -> pb.RankArtworkRequest:
    from keyart.adapters.catalog.parquet import load_catalog

    titles = sorted(load_catalog(settings.world_dir).titles)[:n_titles]
    return pb.RankArtworkRequest(
        request_id="it-1",
        member_id=member,
        context=pb.RequestContext(country="US", language="en-US", device=device, surface="home"),
        titles=[pb.TitleCandidates(title_id=t) for t in titles],
    )


def test_health_is_serving(ray_address):
    with grpc.insecure_channel(ray_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(ray_address):
    with grpc.insecure_channel(ray_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert "keyart.v1.ArtworkRanker" in names


def test_rank_artwork_one_selection_per_title_in_order(stub, platform_settings):
    request = page_request(platform_settings)
    reply = stub.RankArtwork(request, timeout=10)
    assert [s.title_id for s in reply.selections] == [t.title_id for t in request.titles]
    assert all(0 < s.propensity <= 1 for s in reply.selections)
    assert [s.fallback_reason for s in reply.selections] == [""] * len(request.titles)
    assert all(s.image_id and s.lineage_id for s in reply.selections)
    assert len({s.decision_id for s in reply.selections}) == len(request.titles)
    assert reply.model_version.startswith("m-")
    assert reply.policy in {"epsilon_greedy", "uniform"}


def test_unknown_member_is_served(stub, platform_settings):
    reply = stub.RankArtwork(page_request(platform_settings, member="brand-new-member"), timeout=10)
    assert all(s.fallback_reason == "" for s in reply.selections)


def test_unknown_title_and_image_fall_back_per_title(stub, platform_settings):
    request = page_request(platform_settings, n_titles=3)
    request.titles.add(title_id="no-such-title")
    request.titles[0].candidate_image_ids.append("no-such-image")
    reply = stub.RankArtwork(request, timeout=10)
    assert len(reply.selections) == 4
    assert reply.selections[0].fallback_reason == "unknown_image:no-such-image"
    assert reply.selections[0].image_id  # the catalog default
    assert reply.selections[3].fallback_reason == "unknown_title"
    assert reply.selections[1].fallback_reason == ""


BAD = [
    ("member_id", lambda r: setattr(r, "member_id", "")),
    ("titles", lambda r: r.ClearField("titles")),
    ("titles", lambda r: r.titles.extend(pb.TitleCandidates(title_id=f"x{i}") for i in range(200))),
    ("titles[0].candidate_image_ids", lambda r: r.titles[0].candidate_image_ids.extend(f"i{i}" for i in range(101))),
    ("titles[1].title_id", lambda r: setattr(r.titles[1], "title_id", r.titles[0].title_id)),
    ("context.device", lambda r: setattr(r.context, "device", pb.DEVICE_TYPE_UNSPECIFIED)),
]


@pytest.mark.parametrize("field,mutate", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_invalid_argument_naming_the_field(stub, platform_settings, field, mutate):
    request = page_request(platform_settings, n_titles=3)
    mutate(request)
    with pytest.raises(grpc.RpcError) as err:
        stub.RankArtwork(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")


def test_client_deadline_is_honoured(stub, platform_settings):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.RankArtwork(page_request(platform_settings, n_titles=40), timeout=0.001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


def test_report_outcome_and_the_log_records_both(stub, platform_settings):
    from keyart.adapters.decision_log.factory import open_log_store

    reply = stub.RankArtwork(page_request(platform_settings, n_titles=2, member="m00002"), timeout=10)
    s = reply.selections[0]
    outcome = pb.Outcome(decision_id=s.decision_id, member_id="m00002", title_id=s.title_id, image_id=s.image_id,
                         kind=pb.OUTCOME_KIND_PLAYBACK_PROGRESS, minutes_played=42.0)
    outcome.event_time.GetCurrentTime()
    assert stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[outcome]), timeout=10).accepted == 1
    bad = pb.Outcome(decision_id="", member_id="m", title_id="t", image_id="i", kind=pb.OUTCOME_KIND_PLAY_STARTED)
    bad.event_time.GetCurrentTime()
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=[bad]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outcomes[0].decision_id" in err.value.details()

    store = open_log_store(platform_settings)
    try:
        deadline = time.monotonic() + 15
        found = []
        while time.monotonic() < deadline and not found:
            since = time.time() - 3600
            from datetime import datetime

            window = (datetime.fromtimestamp(since, UTC), datetime.now(UTC))
            found = [i for i in store.scan_impressions(*window) if i.decision_id == s.decision_id]
            outcomes = [o for o in store.scan_outcomes(*window) if o.decision_id == s.decision_id]
            if not (found and outcomes):
                found = []
                time.sleep(0.5)
        assert found, "impression not logged"
        imp = found[0]
        assert imp.propensity == pytest.approx(s.propensity)
        assert imp.model_version == reply.model_version and imp.features
        assert outcomes[0].minutes_played == 42.0
    finally:
        store.close()


def test_metrics_endpoint_exports_keyart_metrics(stub, platform_settings):
    stub.RankArtwork(page_request(platform_settings), timeout=10)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{platform_settings.metrics_port}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        if "keyart_decisions_total" in text:
            break
        time.sleep(1)
    assert "keyart_decisions_total" in text
    assert "keyart_rank_latency_seconds" in text


def test_promoted_model_is_served_without_restart_and_a_bad_one_is_refused(stub, platform_settings, ray_address):
    from keyart.app.build import train_on_simulated_log
    from keyart.core.model import promote

    before = stub.RankArtwork(page_request(platform_settings), timeout=10).model_version
    new = train_on_simulated_log(platform_settings, pages=300, seed=99, promote=False)["version"]
    # A broken artifact: schema mismatch. Promotion itself refuses it...
    broken = platform_settings.models_dir / "m-broken"
    broken.mkdir()
    meta = json.loads((platform_settings.models_dir / new / "meta.json").read_text())
    meta.update(version="m-broken", feature_schema="not-this-one")
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="feature schema"):
        promote(platform_settings.models_dir, "m-broken")
    # ...and a pointer forced onto it leaves the previous model serving.
    (platform_settings.models_dir / "CURRENT").write_text("m-broken\n")
    time.sleep(3)
    assert stub.RankArtwork(page_request(platform_settings), timeout=10).model_version == before

    promote(platform_settings.models_dir, new)
    deadline = time.monotonic() + 20
    versions = set()
    while time.monotonic() < deadline:
        reply = stub.RankArtwork(page_request(platform_settings), timeout=10)  # never fails meanwhile
        assert len(reply.selections) == 8
        versions.add(reply.model_version)
        if reply.model_version == new:
            break
        time.sleep(0.2)
    assert reply.model_version == new, versions

    # A copy of it cut inside its trees, then binary garbage in CURRENT: promotion refuses
    # the first, the replica keeps serving `new` through both, and not one call fails.
    import shutil

    from keyart.errors import ModelLoadError

    cut = platform_settings.models_dir / "m-cut"
    shutil.copytree(platform_settings.models_dir / new, cut)
    text = (cut / "model.txt").read_bytes()
    (cut / "model.txt").write_bytes(text[: len(text) // 2])
    with pytest.raises(ModelLoadError, match="SHA-256|separate process"):
        promote(platform_settings.models_dir, "m-cut")
    current = platform_settings.models_dir / "CURRENT"
    try:
        for pointer in (b"m-cut\n", b"\xff\xfe\x00garbage"):
            current.write_bytes(pointer)
            for _ in range(15):  # over 3 s: the replica polls every 2 s
                reply = stub.RankArtwork(page_request(platform_settings), timeout=10)
                assert reply.model_version == new and not any(s.fallback_reason for s in reply.selections)
                time.sleep(0.2)
    finally:
        current.write_text(new + "\n")
    with grpc.insecure_channel(ray_address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_ingested_artwork_is_ranked_with_the_crop_for_the_device(stub, platform_settings, tmp_path):
    """Artwork analysis -> catalog -> RankArtwork, with no restart and no impressions."""
    import skimage.data
    from PIL import Image

    from keyart.jobs.artwork.ingest import ingest_artwork

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo, quality=92)
    title = page_request(platform_settings, n_titles=1).titles[0].title_id
    added, errors = ingest_artwork([photo], platform_settings.world_dir, title)
    assert not errors and added == [f"{title}-astronaut"]

    request = page_request(platform_settings, n_titles=1, device=pb.DEVICE_TYPE_MOBILE)
    request.titles[0].candidate_image_ids.append(added[0])
    deadline = time.monotonic() + 20
    while True:
        reply = stub.RankArtwork(request, timeout=10)
        s = reply.selections[0]
        if s.fallback_reason == "" or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # replicas reload the catalog within ~2 s
    assert s.fallback_reason == "" and s.image_id == added[0]
    assert 0 < s.score < 1 and s.propensity == 1.0
    assert s.crop.aspect_ratio == "2:3" and s.crop.variant_image_id == f"{added[0]}-2x3"
    assert not s.crop.cuts_face
    assert s.crop.height == 512 and s.crop.width == 341  # full-height portrait crop of a 512 x 512 photo
    request.context.device = pb.DEVICE_TYPE_TV
    assert stub.RankArtwork(request, timeout=10).selections[0].crop.aspect_ratio == "16:9"


def test_fuzzed_messages_get_ok_or_invalid_argument_through_serve(ray_address, platform_settings):
    """Random, mutated and raw-byte messages through HAProxy, Serve's proxy and a replica:
    OK or INVALID_ARGUMENT naming the field; RESOURCE_EXHAUSTED above 4 MiB; still SERVING."""
    from fuzz_messages import RANK, REPORT, assert_clean, call_raw, outcome_requests, rank_requests, wire_cases
    from hypothesis import HealthCheck, given, settings

    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.grpc.convert import MAX_MESSAGE_BYTES

    catalog = load_catalog(platform_settings.world_dir)
    titles, images = sorted(catalog.titles)[:40], sorted(catalog.images)[:80]
    fuzz = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def fuzz_one(channel: grpc.Channel, method: str, messages) -> None:
        @fuzz
        @given(wire_cases(messages))
        def check(data: bytes) -> None:
            assert_clean(*call_raw(channel, method, data), data)

        check()

    with grpc.insecure_channel(ray_address) as channel:
        fuzz_one(channel, RANK, rank_requests(titles, images))
        fuzz_one(channel, REPORT, outcome_requests(titles, images))
        code, _ = call_raw(channel, RANK, b"\x0a" + b"\xff" * (MAX_MESSAGE_BYTES + 16))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(ray_address))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
