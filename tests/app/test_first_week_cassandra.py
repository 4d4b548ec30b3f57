"""`make run` on Cassandra: the platform logs every decision and outcome to a real node, and
the ML engineer's commands read it back from the store (README, "A real Cassandra").

The first week's catalog and traffic (tests/app/test_first_week.py) on a fresh data dir,
served with KEYART_LOG_BACKEND=cassandra against the live node of tests/live_cassandra.py:
`keyart log migrate`, day-one exploration over gRPC with outcomes, `keyart log stats`,
`keyart log export`, `keyart train --from-store`, `keyart evaluate --from-store`, `keyart
models promote`, and the running server then serves the model, still logging to Cassandra.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from app.test_first_week import MEMBERS, TITLES, BareServer, keyart, outcomes_for, page, pool_size, write_catalog
from live_cassandra import column, live_keyspace
from platform_data import REPO_ROOT, free_port

from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb

pytestmark = [pytest.mark.cassandra, pytest.mark.integration]


def test_the_platform_logs_to_cassandra_and_every_command_reads_it(cassandra_node, tmp_path):
    from keyart.app.build import ensure_built
    from keyart.core.model import current_version

    with live_keyspace(cassandra_node, migrate=False) as (session, keyspace):
        now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        write_catalog(tmp_path / "catalog", now)
        env = cassandra_node.env(
            KEYART_CASSANDRA_KEYSPACE=keyspace, KEYART_DATA_DIR=str(tmp_path / "var"),
            KEYART_FEATURE_REPO_DIR=str(REPO_ROOT / "features"), KEYART_GRPC_PORT=str(free_port()),
            KEYART_METRICS_PORT=str(free_port()), KEYART_HTTP_PORT=str(free_port()),
            KEYART_FEATURE_TIMEOUT_MS="2000", KEYART_REQUEST_BUDGET_MS="4000")
        keyart(env, "world", "import", str(tmp_path / "catalog"), "--json")
        migrated = json.loads(keyart(env, "log", "migrate", "--json"))
        assert migrated["keyspace"] == keyspace
        settings = KeyartSettings(**{k.removeprefix("KEYART_").lower(): v for k, v in env.items()
                                     if k != "KEYART_CASSANDRA_HOSTS"},
                                  cassandra_contact_points=env["KEYART_CASSANDRA_HOSTS"])
        assert settings.log_backend == "cassandra"
        ensure_built(settings, lambda _msg: None)

        rng = np.random.default_rng(23)
        titles = [f"doc-{t:03d}" for t in range(TITLES)]

        def take(member: str, image_id: str) -> float:
            return 0.1 + 0.4 * (int(image_id.rsplit("art", 1)[1]) % 2 == int(member.rsplit("-", 1)[1]) % 2)

        server = BareServer(settings)
        served = 0
        try:
            start = datetime.now(UTC) - timedelta(hours=5)
            for k in range(160):
                when = start + timedelta(hours=4) * k / 160
                server.runtime.page.clock = lambda when=when: when
                member = f"viewer-{int(rng.integers(MEMBERS)):04d}"
                shown = list(rng.choice(titles, size=6, replace=False))
                reply = server.stub.RankArtwork(page(member, shown, when, pb.DEVICE_TYPE_TV), timeout=10)
                assert reply.policy == "uniform"
                assert [s.fallback_reason for s in reply.selections] == [""] * len(shown)
                served += len(reply.selections)
                outcomes = outcomes_for(reply, member, when, rng, take)
                if outcomes:
                    assert server.stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes),
                                                     timeout=10).accepted == len(outcomes)
            server.runtime.page.clock = lambda: datetime.now(UTC)
            assert server.runtime.writer is not None and server.runtime.writer.flush(60)

            # In Cassandra, once each: the store the server wrote is the node's keyspace.
            ids = column(session, keyspace, "impressions_by_time")
            assert len(ids) == served == len(set(ids))
            stats = json.loads(keyart(env, "log", "stats", "--since", "1d", "--json"))
            assert stats["window"]["impressions"] == served and stats["backend"] == "cassandra"  # window counts
            assert stats["window"]["outcomes"] > 0 and stats["spool"]["pending_bytes"] == 0

            out = tmp_path / "week1.parquet"
            exported = json.loads(keyart(env, "log", "export", "--since", "1d", "--out", str(out), "--json"))
            frame = pd.read_parquet(out)
            assert exported["impressions"] == len(frame) == served
            assert np.allclose(frame["propensity"], 1 / frame["title_id"].map(lambda t: pool_size(titles.index(t))))
            assert frame["played"].any()

            trained = json.loads(keyart(env, "train", "--from-store", "--since", "1d", "--ensemble-size", "2",
                                        "--threads", "1", "--json"))
            assert trained["rows"] == pytest.approx(0.8 * served, abs=2)  # the newest 20 % held out
            evaluated = json.loads(keyart(env, "evaluate", "--from-store", "--since", "1d", "--candidate",
                                          trained["version"], "--bootstrap", "30", "--no-report", "--json"))
            assert evaluated["in_sample"] is False and "candidate" in evaluated["policies"]
            assert evaluated["rows"] == trained["training_window"]["holdout_rows"]
            keyart(env, "models", "promote", trained["version"])
            assert current_version(settings.models_dir) == trained["version"]

            deadline = time.monotonic() + 20
            while True:  # the running server picks the model up without a restart
                reply = server.stub.RankArtwork(page("viewer-0003", titles[:4], datetime.now(UTC)), timeout=10)
                served += len(reply.selections)
                if reply.model_version == trained["version"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert reply.model_version == trained["version"]
            assert server.runtime.writer.flush(60)
            assert len(column(session, keyspace, "impressions_by_time")) == served  # every page, model's too
        finally:
            server.close()
