"""Faults on a real Cassandra node under the decision log (``cassandra_own_node``: a node this
session started, so it may be SIGKILLed, SIGSTOPped and restarted in place: same home, ports
and data).

The writer is built as the page service builds it, ``open_decision_log(settings)``: the
Cassandra store (connected lazily) and the shared spool under ``<data_dir>/log/spool``.
"Exactly once" is counted by decision_id in impressions_by_decision and impressions_by_time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from adapters.decision_log.dlog_helpers import make_impression
from live_cassandra import column, live_keyspace

from keyart.adapters.decision_log.cassandra import connect_session
from keyart.adapters.decision_log.factory import SPOOL_DIR, open_decision_log
from keyart.adapters.decision_log.spool_dirs import spool_status

pytestmark = pytest.mark.cassandra

TESTS = Path(__file__).resolve().parents[2]


class Load:
    """A request thread: submit_impressions of ``batch`` new impressions every ``every_s``,
    recording each call's latency and the ids of every accepted submit."""

    def __init__(self, writer, prefix: str, batch: int = 4, every_s: float = 0.02) -> None:
        self.writer, self.prefix, self.batch, self.every_s = writer, prefix, batch, every_s
        self.acked: list[str] = []
        self.refused = 0
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{prefix}", daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            now = datetime.now(UTC)
            imps = [make_impression(0, decision_id=f"{self.prefix}-{n + k:07d}", at=now) for k in range(self.batch)]
            n += self.batch
            t0 = time.perf_counter()
            ok = self.writer.submit_impressions(imps)
            self.latencies.append(time.perf_counter() - t0)
            if ok:
                self.acked.extend(i.decision_id for i in imps)
            else:
                self.refused += len(imps)
            self._stop.wait(self.every_s)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_for(pred, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - t0


def drain(writer, timeout: float = 120.0) -> float:
    """flush() until the queue and the spool are empty and the store is up; seconds taken.
    (One flush pings a store believed down only once: a driver still reconnecting needs more.)"""

    def done() -> bool:
        writer.flush(5)
        s = writer.stats()
        return bool(s["store_up"]) and s["spool_bytes"] == 0 and s["queue_depth"] == 0

    return wait_for(done, timeout, "decision log drained to Cassandra")


def assert_exactly_once(node, keyspace: str, acked: list[str], prefix: str) -> None:
    session = connect_session(node.settings(keyspace))  # a fresh session: the old one lived through the fault
    try:
        for table in ("impressions_by_decision", "impressions_by_time"):
            ids = [d for d in column(session, keyspace, table) if d.startswith(prefix)]
            assert len(ids) == len(set(ids)), f"{table}: {len(ids) - len(set(ids))} duplicates"
            assert set(ids) == set(acked), f"{table}: {len(set(acked) - set(ids))} acknowledged impressions missing"
    finally:
        session.cluster.shutdown()


def test_cassandra_sigkilled_mid_load_spools_and_replays(cassandra_own_node, tmp_path) -> None:
    node = cassandra_own_node
    with live_keyspace(node) as (_, keyspace):
        writer = open_decision_log(node.settings(keyspace, data_dir=tmp_path / "data"))
        try:
            with Load(writer, "kill") as load:
                wait_for(lambda: writer.stats()["written"] >= 200, 60, "200 impressions written")
                node.kill()
                down_at = time.monotonic()
                wait_for(lambda: writer.stats()["spooled"] >= 100, 60, "100 impressions spooled")
                restart_s = node.restart()
                time.sleep(1.0)  # load goes on a little after the restart
            drained_s = drain(writer)
            s = writer.stats()
        finally:
            writer.close()
        down_s = time.monotonic() - down_at
        assert load.refused == 0 and s["dropped"] == 0 and s["dead_lettered"] == 0
        assert s["spooled"] >= 100 and s["replayed"] >= 100 and s["store_errors"] >= 1
        assert s["written"] + s["replayed"] >= len(load.acked)
        assert_exactly_once(node, keyspace, load.acked, "kill-")
        node.notes.append(
            f"fault SIGKILL mid-load: {len(load.acked)} acked, {s['spooled']} spooled, {s['replayed']} replayed; "
            f"restart {restart_s:.1f} s, drained {drained_s:.1f} s after restart ({down_s:.1f} s from kill)"
        )


def _serving_process(env: dict[str, str]) -> subprocess.Popen[str]:
    code = "from adapters.decision_log.cassandra_workers import serve_log; serve_log()"
    full = dict(os.environ, **env, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", code], env=full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)  # fmt: skip


def _ask(proc: subprocess.Popen[str], line: str) -> dict:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    out = proc.stdout.readline()
    assert out, f"serving process died (exit {proc.poll()})"
    return json.loads(out)


def test_serving_process_killed_while_cassandra_is_down(cassandra_own_node, tmp_path) -> None:
    """SIGKILL the serving process while Cassandra is down and its spool holds records; then
    Cassandra and a new serving process start: the orphaned spool is adopted and replayed once."""
    node = cassandra_own_node
    data = tmp_path / "data"
    with live_keyspace(node) as (_, keyspace):
        env = node.env(KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_DATA_DIR=str(data), WORKER_PREFIX="srv")
        proc = _serving_process(env)
        try:
            up = _ask(proc, "write 150")
            assert up["flushed"] and up["written"] == 150 and up["spooled"] == 0
            node.kill()
            down = _ask(proc, "write 250")  # the writer finds the store gone and spools, fsync'd
            assert down["flushed"] and down["spooled"] == 250 and down["acked"] == 400 and down["spool_bytes"] > 0
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        root = data / "log" / SPOOL_DIR
        # Its writer process outlives it briefly: it spools what it still holds, then
        # lets go of the directory, which stays for adoption.
        wait_for(lambda: [(d["alive"], d["bytes"] > 0) for d in spool_status(root)] == [(False, True)], 30,
                 "the dead process's spool directory released, records kept")

        node.restart()
        settings = node.settings(keyspace, data_dir=data)
        writer = open_decision_log(settings)  # adopts the dead process's spool at start
        try:
            drain(writer)
            s = writer.stats()
        finally:
            writer.close()
        assert s["adopted_spools"] == 1 and s["replayed"] == 250 and s["dead_lettered"] == 0
        assert spool_status(root) == []
        acked = [f"srv-{n:06d}" for n in range(400)]
        assert_exactly_once(node, keyspace, acked, "srv-")

        again = open_decision_log(settings)  # a second restart finds nothing left to replay
        try:
            assert again.flush(10)
            assert again.stats()["adopted_spools"] == 0 and again.stats()["replayed"] == 0
        finally:
            again.close()


def test_a_stalled_node_never_blocks_submit(cassandra_own_node, tmp_path) -> None:
    """SIGSTOP the JVM for 3 s under load (sockets open, no answers): submit_impressions stays
    a queue append (max latency measured, well under 50 ms); after SIGCONT it all lands once."""
    node = cassandra_own_node
    with live_keyspace(node) as (_, keyspace):
        writer = open_decision_log(node.settings(keyspace, data_dir=tmp_path / "data"))
        try:
            with Load(writer, "stall", batch=4, every_s=0.005) as load:
                wait_for(lambda: writer.stats()["written"] >= 200, 60, "200 impressions written")
                before = len(load.latencies)
                with node.paused():
                    time.sleep(3.0)
                    depth = writer.stats()["queue_depth"]
                stalled = load.latencies[before:]
                time.sleep(0.5)
            drain(writer)
            s = writer.stats()
        finally:
            writer.close()
        assert depth > 0  # the writer really was held up
        assert load.refused == 0 and s["dropped"] == 0
        worst_ms = max(stalled) * 1000
        p99_ms = sorted(stalled)[int(0.99 * (len(stalled) - 1))] * 1000
        node.notes.append(
            f"fault SIGSTOP 3 s: {len(stalled)} submits while stalled, max {worst_ms:.2f} ms, p99 {p99_ms:.2f} ms; "
            f"queue depth {depth}, {s['spooled']} spooled"
        )
        assert worst_ms < 50, f"submit_impressions took {worst_ms:.1f} ms while the node was stopped"
        assert_exactly_once(node, keyspace, load.acked, "stall-")
