"""`make bench`'s per-stage CPU breakdown, on the test platform at a tiny size."""

from __future__ import annotations

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
