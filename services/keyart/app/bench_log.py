"""`make bench-log`: the decision log on a real Cassandra node, measured against SQLite.

Three figures, written to bench/results/log.json:

- writes: impressions (40 per page, the features Keyart logs) submitted to one
  DecisionLogWriter over a live single-node Cassandra until it has flushed them all:
  impressions per second of wall time for the writer process, and per CPU-second of the
  writer process (every thread counted) and of the Cassandra JVM (on these machines the
  node shares the cores with the writer);
- export: `keyart log export`'s code path over that time range, rows per second;
- serving: RankArtwork p50/p99 on the bare grpc.aio server, once logging to SQLite and
  once to Cassandra, at the same open-loop rate, alternated twice in the same run so
  machine noise falls on both.

The node is `keyart.app.cassandra_node`'s (jars cached in .cache/cassandra), with its
home under the data dir; it is stopped at the end unless it was already running.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from keyart.settings import KeyartSettings

PAGE = 40  # impressions per page


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _impressions(n: int, start: datetime, width: int) -> list[Any]:
    from keyart.domain import Impression

    rng = np.random.default_rng(3)
    features = rng.random(width).astype("<f4").tobytes()  # a FeatureRow
    run = uuid.uuid4().hex[:8]
    return [
        Impression(
            decision_id=f"bench-{run}-{i}", request_id=f"bench-{run}-{i // PAGE}", member_id=f"m{i % 5000:05d}",
            title_id=f"t{i % 200:04d}", image_id=f"t{i % 200:04d}-{i % 7:02d}", lineage_id=f"L{i % 1400:05d}",
            propensity=0.25, score=0.125, explored=i % 20 == 0, policy="epsilon_greedy", model_version="m-bench",
            position=i % PAGE, country="US", language="en", device="TV", surface="home",
            decided_at=start + timedelta(milliseconds=5 * i), feature_schema="bench", features=features,
            actor_affinity=((f"a{i % 450:04d}", 0.25), ("a0001", 0.5)),
        )
        for i in range(n)
    ]


def write_and_export(cs: KeyartSettings, node_pid: int | None, n: int, out_dir: Path,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Sustained writes through one DecisionLogWriter, then the export of their time range.

    `node_pid`: the Cassandra JVM on this machine, for its CPU time (None: a remote cluster).
    """
    from keyart.adapters.decision_log.export import export_parquet
    from keyart.adapters.decision_log.factory import open_decision_log, open_log_store
    from keyart.core.feature_space import FeatureSpace
    from keyart.jobs.world.vocab import GENRES

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    imps = _impressions(n, start, len(FeatureSpace(genres=GENRES, vocabularies={}).names))
    # The writer's own rate and CPU: as a thread of this process, so its CPU is this
    # process's (served pages run it in a child process, which the serving p99 includes).
    writer = open_decision_log(cs.model_copy(update={"log_writer_process": False}))
    try:
        node_cpu = (lambda: _cpu_seconds(node_pid)) if node_pid is not None else (lambda: float("nan"))
        cpu0, node0, t0 = time.process_time(), node_cpu(), time.perf_counter()
        refused = 0
        for k in range(0, n, PAGE):
            while not writer.submit_impressions(imps[k:k + PAGE]):  # queue full: the writer is the limit
                refused += 1
                time.sleep(0.001)
        if not writer.flush(600):
            raise RuntimeError("the writer did not flush within 600 s")
        wall = time.perf_counter() - t0
        cpu, node = time.process_time() - cpu0, node_cpu() - node0
        stats = writer.stats()
    finally:
        writer.close()
    writes = {
        "impressions": n, "seconds": round(wall, 2), "per_s_wall": round(n / wall),
        "per_cpu_s_writer_process": round(n / cpu) if cpu > 0 else None,
        "per_cpu_s_cassandra_node": round(n / node) if node > 0 else None,
        "per_cpu_s_writer_and_node": round(n / (cpu + node)) if cpu + node > 0 else None,
        "writer_cpu_s": round(cpu, 2), "node_cpu_s": round(node, 2) if node == node else None,
        "submit_retries_queue_full": refused,
        "writer_stats": stats,
    }
    say(f"  writes: {writes['per_s_wall']}/s wall, {writes['per_cpu_s_writer_process']} per writer CPU-s, "
        f"{writes['per_cpu_s_writer_and_node']} per CPU-s of writer + node")
    store = open_log_store(cs)
    try:
        t0 = time.perf_counter()
        counts = export_parquet(store, start - timedelta(minutes=1), imps[-1].decided_at + timedelta(minutes=1),
                                out_dir / "bench-log-export.parquet")
        wall = time.perf_counter() - t0
    finally:
        store.close()
    export = {"rows": int(counts["impressions"]), "seconds": round(wall, 2),
              "rows_per_s": round(counts["impressions"] / wall)}
    if export["rows"] != n:
        raise RuntimeError(f"the export found {export['rows']} of the {n} impressions written")
    say(f"  export: {export['rows_per_s']} rows/s ({export['rows']} rows in {export['seconds']} s)")
    return {"writes": writes, "export": export}


def serving_p99(base: dict[str, str], cs_env: dict[str, str], rate: float, duration_s: float, rounds: int,
                say: Callable[[str], None], port: int) -> dict[str, Any]:
    """RankArtwork latency with each log backend, alternated `rounds` times at one open-loop rate."""
    from keyart.app.bench import _start, _stop, bench_requests, open_loop

    settings = KeyartSettings()
    requests = bench_requests(settings)
    keyart = [sys.executable, "-m", "keyart.app.cli.main", "serve-bare", "--port", str(port)]
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "cassandra": []}
    for r in range(rounds):
        for backend in ("sqlite", "cassandra") if r % 2 == 0 else ("cassandra", "sqlite"):
            env = {**base, "KEYART_LOG_BACKEND": backend, **(cs_env if backend == "cassandra" else {})}
            proc = _start(keyart, env, "READY", 180)
            try:
                res = asyncio.run(open_loop(f"127.0.0.1:{port}", requests, rate, duration_s))
            finally:
                _stop(proc)
            say(f"  {backend} round {r + 1}: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms at {rate} RPS")
            runs[backend].append(res)
    out: dict[str, Any] = {"rate_rps": rate, "duration_s": duration_s, "rounds": runs}
    for backend, rs in runs.items():
        out[backend] = {"p50_ms": round(float(np.median([x["p50_ms"] for x in rs])), 2),
                        "p99_ms": round(float(np.median([x["p99_ms"] for x in rs])), 2),
                        "errors": sum(int(x["errors"]) for x in rs)}
    out["p99_ratio_cassandra_to_sqlite"] = round(out["cassandra"]["p99_ms"] / out["sqlite"]["p99_ms"], 3)
    return out


def run_bench_log(settings: KeyartSettings, out: Path, say: Callable[[str], None], impressions: int = 100_000,
                  rate: float = 20.0, duration_s: float = 20.0, rounds: int = 2, port: int = 9302) -> dict[str, Any]:
    from keyart.adapters.decision_log.cassandra import connect_session, migrate
    from keyart.app.build import ensure_built
    from keyart.app.cassandra_node import start_node, stop_node

    ensure_built(settings, say)
    home = settings.data_dir / "bench-log" / "cassandra"
    t0 = time.monotonic()
    node = start_node(home)
    ready_s = time.monotonic() - t0
    say(f"Cassandra {node.version} on {node.host}:{node.port} (pid {node.pid}), ready in {ready_s:.1f} s")
    keyspace = f"keyart_bench_{uuid.uuid4().hex[:8]}"
    cs = settings.model_copy(update={"log_backend": "cassandra", "cassandra_contact_points": node.host,
                                     "cassandra_port": node.port, "cassandra_keyspace": keyspace})
    try:
        session = connect_session(cs)
        try:
            migrate(session, keyspace, None, 0)
        finally:
            session.cluster.shutdown()
        say(f"writing {impressions} impressions to keyspace {keyspace} ...")
        log = write_and_export(cs, node.pid, impressions, settings.data_dir / "bench-log", say)
        base = {k: v for k, v in os.environ.items() if not k.startswith("KEYART_CASSANDRA")}
        cs_env = {"KEYART_CASSANDRA_HOSTS": node.host, "KEYART_CASSANDRA_PORT": str(node.port),
                  "KEYART_CASSANDRA_KEYSPACE": keyspace}
        say(f"RankArtwork ({rate} RPS open loop, {duration_s:.0f} s x {rounds} rounds per backend) ...")
        serving = serving_p99(base, cs_env, rate, duration_s, rounds, say, port)
    finally:
        if node.started:
            stop_node(home)
    result = {
        "cassandra": {"version": node.version, "started_here": node.started, "ready_s": round(ready_s, 1)},
        **log, "serving": serving,
        "setup": {"cores": os.cpu_count(), "page": f"{PAGE} impressions per submit",
                  "note": "writer, Cassandra node and load generator share the machine's cores"},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    say(f"wrote {out}: p99 cassandra/sqlite {serving['p99_ratio_cassandra_to_sqlite']}")
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impressions", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=20.0, help="Open-loop RankArtwork rate per backend.")
    ap.add_argument("--duration", type=float, default=20.0, help="Seconds per serving round.")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/log.json"))
    args = ap.parse_args(argv)
    run_bench_log(KeyartSettings(), args.out, lambda m: print(m, flush=True), args.impressions, args.rate,
                  args.duration, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
