"""`make bench`'s per-stage CPU breakdown, on the test platform at a tiny size."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from keyart.adapters.grpc import convert
from keyart.app.bench import bench_requests, stage_figures
from keyart.core import ranker as ranker_module
from keyart.core.featurize import build_matrix

STAGES = ("parse", "member_features", "feature_matrix", "forests", "choice", "log_submit", "response")


def test_stages_add_up_to_the_request_thread_and_patches_are_undone(platform_settings) -> None:
    originals = (convert.parse_rank_request, convert.to_response, ranker_module.Ranker.__dict__["_choose_all"])
    requests = bench_requests(platform_settings, n=16, titles=10, candidates=4)
    figures = stage_figures(platform_settings, requests, pages=40)

    ms = figures["cpu_ms_per_page"]
    for stage in STAGES:
        assert ms[stage] > 0, stage  # each stage ran and was timed
    timed = sum(ms[s] for s in STAGES)
    # handler_other is the rest of the request thread; rounding gives each figure 0.0005 ms.
    assert abs(timed + ms["handler_other"] - ms["handler"]) < 0.01
    assert ms["handler_other"] >= 0
    assert ms["writer"] > 0  # the log was on: its thread wrote the pages
    assert ms["process"] >= ms["handler"]
    # Nothing stays wrapped after the measurement.
    assert (convert.parse_rank_request, convert.to_response, ranker_module.Ranker.__dict__["_choose_all"]) == originals
    assert ranker_module.build_matrix is build_matrix


def test_bench_pages_stay_out_of_the_configured_decision_log(platform_settings, tmp_path) -> None:
    """`keyart train` reads the configured log: the bench's synthetic pages go to a scratch one."""
    from keyart.app.bench import scratch_log_settings

    def impressions(path) -> int:
        if not path.exists():
            return 0
        with closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])

    configured = platform_settings.log_sqlite_path
    before = impressions(configured)
    scratch = scratch_log_settings(platform_settings.model_copy(update={"cassandra_contact_points": "10.0.0.1"}),
                                   tmp_path)
    assert scratch.log_backend == "sqlite"  # a configured Cassandra log is not the bench's either
    assert scratch.log_sqlite_path.parent == tmp_path and scratch.spool_root.parent == tmp_path
    stage_figures(scratch.model_copy(update={"cassandra_contact_points": ""}),
                  bench_requests(platform_settings, n=4, titles=5, candidates=3), pages=10)
    assert impressions(scratch.log_sqlite_path) >= 10 * 5
    assert impressions(configured) == before
