"""`make bench`'s transport floor: the stand-in page servers, their inputs and the ratio cap."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import psutil
import pytest

from keyart.adapters.grpc.wire import SERVICE
from keyart.adapters.ports import free_loopback_port
from keyart.adapters.ray_serve.launch import load_serve_config
from keyart.app.bench import bench_requests, scratch_log_settings
from keyart.app.bench_floor import canned_reply, load_reply, ratio_ceiling, spin
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb


def test_the_ratio_cap_is_the_bare_page_over_the_bare_page_plus_rays_extra() -> None:
    assert ratio_ceiling(2.5, 0.0) == 1.0
    assert ratio_ceiling(2.5, 0.5) == pytest.approx(2.5 / 3.0)
    # For 0.9 the bare page must cost at least 9 times Ray's extra.
    assert ratio_ceiling(9 * 0.4, 0.4) == pytest.approx(0.9)
    assert ratio_ceiling(2.0, -0.1) == 1.0  # a round where Ray came out cheaper caps nothing
    with pytest.raises(ValueError, match="bare_cpu_ms"):
        ratio_ceiling(0.0, 0.3)


def test_a_reply_that_cannot_be_served_is_refused_with_the_file_named(tmp_path) -> None:
    with pytest.raises(ValueError, match=f"{tmp_path / 'none.bin'}: cannot read the canned reply"):
        load_reply(tmp_path / "none.bin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match=f"{junk}: not a serialized RankArtworkResponse"):
        load_reply(junk)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(pb.RankArtworkResponse(model_version="m").SerializeToString())
    with pytest.raises(ValueError, match="without selections"):
        load_reply(empty)
    cli = subprocess.run([sys.executable, "-m", "keyart.app.bench_floor", "bare", "--port", "1",
                          "--reply", str(junk)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert f"error: {junk}: not a serialized RankArtworkResponse" in cli.stderr
    assert "Traceback" not in cli.stderr
    cli = subprocess.run([sys.executable, "-m", "keyart.app.bench_floor", "bare", "--port", "1",
                          "--reply", str(junk), "--burn-ms", "-1"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "error: --burn-ms -1: must be between 0 and 1000" in cli.stderr


def test_the_stand_in_page_spins_for_the_cpu_it_is_given() -> None:
    import time

    for seconds in (0.002, 0.01):
        t0 = time.thread_time()
        spin(seconds)
        assert seconds <= time.thread_time() - t0 < seconds + 0.002


def test_the_serve_config_swaps_only_the_application(tmp_path) -> None:
    settings = KeyartSettings(data_dir=tmp_path, grpc_port=9123)
    page = load_serve_config(settings)
    floor = load_serve_config(settings, application=("keyart.app.bench_floor:build_canned_app",
                                                     {"reply_file": "/r.bin"}))
    page_app, floor_app = page["applications"][0], floor["applications"][0]
    assert (floor_app["import_path"], floor_app["args"]) == ("keyart.app.bench_floor:build_canned_app",
                                                             {"reply_file": "/r.bin"})
    assert floor_app["deployments"] == page_app["deployments"]  # same replicas, limits and CPUs
    assert floor["grpc_options"] == page["grpc_options"]  # same ingress and servicers


@pytest.mark.integration
def test_the_bare_stand_in_server_answers_every_page_with_the_real_reply(platform_settings, tmp_path) -> None:
    requests = bench_requests(platform_settings, n=3, titles=6, candidates=3)
    reply_file = tmp_path / "reply.bin"
    # Its one page goes to a scratch log, as in `make bench`: the platform's log is shared.
    assert canned_reply(scratch_log_settings(platform_settings, tmp_path), requests[0], reply_file) > 0
    reply = load_reply(reply_file)
    assert len(reply.selections) == 6 and reply.model_version

    port = free_loopback_port()
    server = subprocess.Popen([sys.executable, "-m", "keyart.app.bench_floor", "bare", "--port", str(port),
                               "--reply", str(reply_file), "--burn-ms", "50"], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ))
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("READY")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            rank = channel.unary_unary(f"/{SERVICE}/RankArtwork",
                                       request_serializer=pb.RankArtworkRequest.SerializeToString,
                                       response_deserializer=pb.RankArtworkResponse.FromString)
            for request in requests:  # whatever the page, the same reply, after the page's CPU
                cpu0 = psutil.Process(server.pid).cpu_times()
                assert rank(request, timeout=10) == reply
                cpu1 = psutil.Process(server.pid).cpu_times()
                assert (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system) >= 0.03  # 50 ms, read in 10 ms ticks
            report = channel.unary_unary(f"/{SERVICE}/ReportOutcome",
                                         request_serializer=pb.ReportOutcomeRequest.SerializeToString,
                                         response_deserializer=pb.ReportOutcomeResponse.FromString)
            with pytest.raises(grpc.RpcError) as err:
                report(pb.ReportOutcomeRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.terminate()
        server.wait(timeout=30)
