"""Keyart on Ray Serve as a launch would run it: mutual TLS in front, two replicas.

- The TLS front serves a client with a certificate from the configured CA, and refuses
  plaintext, a client without a certificate and one from another CA.
- A replica SIGKILLed under steady load: two client threads send back-to-back pages;
  HAProxy takes the dead replica out of rotation and replays the call it had in flight
  on the other one, Serve starts a replacement, and the dead replica's write-ahead
  journal is adopted by a live writer, so every impression a client got back is in the
  decision log.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import psutil
import pytest
from tls_certs import health_status

from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

pytestmark = pytest.mark.integration

FIGURES: dict[str, object] = {}


class _Load:
    """Back-to-back pages from ``threads`` client threads until stopped."""

    def __init__(self, connect, titles: list[str], threads: int = 2) -> None:
        self.connect, self.titles = connect, titles
        self.acked: list[str] = []
        self.failed: list[tuple[float, str]] = []
        self.replied_at: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, k: int) -> None:
        with self.connect() as channel:
            stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
            n = 0
            while not self.stop.is_set():
                request = pb.RankArtworkRequest(
                    request_id=f"kill-{k}-{n}", member_id=f"m{n % 50:05d}",
                    context=pb.RequestContext(country="US", language="en-US", device=pb.DEVICE_TYPE_TV,
                                              surface="home"),
                    titles=[pb.TitleCandidates(title_id=t) for t in self.titles])
                n += 1
                try:
                    reply = stub.RankArtwork(request, timeout=5)
                except grpc.RpcError as exc:
                    with self.lock:
                        self.failed.append((time.monotonic(), exc.code().name))
                    continue
                with self.lock:
                    self.acked += [s.decision_id for s in reply.selections]
                    self.replied_at.append(time.monotonic())

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _replica_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("ServeReplica" in part for part in (p.info.get("cmdline") or []))]


@pytest.fixture(scope="module")
def launched(platform_settings, tmp_path_factory):
    """Ray Serve with two replicas behind the mutual-TLS front, on a copy of the data dir
    (this load must not join the log other tests read)."""
    from platform_data import free_port
    from tls_certs import make_pki

    from keyart.adapters.ray_serve.launch import start_serve, stop_serve

    own = tmp_path_factory.mktemp("launch") / "var"
    shutil.copytree(platform_settings.data_dir, own)
    pki = make_pki(own.parent / "pki")
    settings = platform_settings.model_copy(update={
        "data_dir": own, "grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port(),
        "tls_cert_file": pki.server_cert, "tls_key_file": pki.server_key, "tls_client_ca_file": pki.ca})
    env = {"RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        address = start_serve(settings, replicas=2)
        yield settings, pki, address
    finally:
        stop_serve()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _channel(address: str, pki, client: str = "client") -> grpc.Channel:
    ca = pki.ca.read_bytes()
    if client == "none":
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        cert, key = (pki.client_cert, pki.client_key) if client == "client" else (pki.stranger_cert, pki.stranger_key)
        creds = grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())
    return grpc.secure_channel(address, creds)


def test_the_tls_front_serves_a_certified_client_and_refuses_the_others(launched):
    settings, pki, address = launched
    with _channel(address, pki) as channel:
        assert health_status(channel) == "SERVING"
    with grpc.insecure_channel(address) as channel:
        assert health_status(channel) == "UNAVAILABLE"
    with _channel(address, pki, "none") as channel:
        assert health_status(channel) == "UNAVAILABLE"
    with _channel(address, pki, "stranger") as channel:
        assert health_status(channel) == "UNAVAILABLE"


def test_a_killed_replica_fails_no_page_and_loses_no_impression(launched):
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.decision_log.factory import open_decision_log, open_log_store
    from keyart.adapters.ray_serve.launch import stop_serve

    settings, pki, address = launched
    titles = sorted(load_catalog(settings.world_dir).titles)[:8]
    deadline = time.monotonic() + 60
    while len(_replica_pids()) < 2:
        assert time.monotonic() < deadline, "two replicas never came up"
        time.sleep(0.2)
    victim = _replica_pids()[0]
    load = _Load(lambda: _channel(address, pki), titles)
    time.sleep(3.0)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    time.sleep(8.0)
    load.finish()
    stop_serve()  # every replica flushes; the fixture's own stop then finds nothing running
    # Whatever no replica adopted before the stop is adopted by the next writer on the log.
    writer = open_decision_log(settings)
    assert writer.flush(60)
    writer.close()

    calls = len(load.replied_at) + len(load.failed)
    replies = sorted(load.replied_at)
    gaps = [b - a for a, b in zip(replies, replies[1:])]
    store = open_log_store(settings)
    try:
        now = datetime.now(UTC)
        logged = {i.decision_id for i in store.scan_impressions(now - timedelta(days=1), now + timedelta(hours=1))}
    finally:
        store.close()
    lost = set(load.acked) - logged
    FIGURES.update(calls=calls, failed=len(load.failed), max_gap_s=round(max(gaps), 3),
                   acked=len(load.acked), lost=len(lost),
                   after_kill=sum(1 for t in replies if t > killed_at), codes=sorted({c for _, c in load.failed}))
    print("replica SIGKILL:", FIGURES)
    assert calls > 200 and FIGURES["after_kill"] > 50, FIGURES
    assert len(load.failed) <= 0.001 * calls, (FIGURES, load.failed[:5])
    assert max(gaps) < 2.0, FIGURES
    assert not lost, FIGURES
