"""`make bench-log`'s measuring code on the live node, at a tiny size (the harness cannot rot)."""

from __future__ import annotations

import pytest
from live_cassandra import column, live_keyspace

from keyart.app.bench_log import write_and_export

pytestmark = pytest.mark.cassandra


def test_write_and_export_figures(cassandra_node, tmp_path) -> None:
    with live_keyspace(cassandra_node) as (session, keyspace):
        settings = cassandra_node.settings(keyspace, data_dir=tmp_path / "data")
        said: list[str] = []
        pid = cassandra_node.pid if cassandra_node.controlled else None  # a remote cluster: no node CPU
        figures = write_and_export(settings, pid, 800, tmp_path, said.append)
        w, e = figures["writes"], figures["export"]
        assert w["impressions"] == 800 and w["per_s_wall"] > 0 and w["per_cpu_s_writer_process"] > 0
        if pid is not None:
            assert w["node_cpu_s"] > 0 and w["per_cpu_s_writer_and_node"] < w["per_cpu_s_writer_process"]
        assert e["rows"] == 800 and e["rows_per_s"] > 0
        assert len(column(session, keyspace, "impressions_by_time")) == 800  # each once
        assert any(m.startswith("  writes:") for m in said) and any(m.startswith("  export:") for m in said)
