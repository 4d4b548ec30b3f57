"""Online experiments on the synthetic world: cells and shadows served by the page service,
logged in a real store, reported from the export and checked against the ground truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keyart.adapters.catalog.parquet import load_catalog
from keyart.core.experiment import Cell, Experiment, Shadow
from keyart.core.ranker import PolicyConfig
from keyart_training.data.dataset import label
from keyart_training.experiment_report import ReportConfig, experiment_report
from keyart_training.experiment_sim import run_experiment
from keyart_training.train import TrainConfig, train_quality_model

FAST = TrainConfig(ensemble_size=0, max_rounds=150, num_threads=1, image_prior_rows=(), search=())


def _train(labelled, y, version: str, space):
    res = train_quality_model(labelled.x, y, labelled.frame["decided_at"].to_numpy(), config=FAST, space=space)
    return res.as_model(version)


@pytest.fixture(scope="module")
def run(platform_settings, world, index, lookup, uniform_log, served_model):
    """Control: a model that learned nothing (shuffled labels), epsilon-greedy 0.2, 70% of
    members; 30% uniform. Shadows: the platform's model (truly better) and one trained to
    pick the worst image (truly worse)."""
    labelled = label(uniform_log, world.params.quality_minutes, index.space)
    shuffled = np.random.default_rng(0).permutation(labelled.y)
    weak = _train(labelled, shuffled, "weak", index.space)
    worst = _train(labelled, 1.0 - labelled.y, "worst", index.space)
    exp = Experiment("exp-test", cells=(Cell("control", 0.7), Cell("explore", 0.3, policy="uniform")),
                     control="control",
                     shadows=(Shadow("better", served_model.version), Shadow("worse", "worst")))
    models = {served_model.version: served_model, "worst": worst}
    policy = PolicyConfig(name="epsilon_greedy", epsilon=0.2, uniform_explore_share=0.0,
                          new_image_min_share=0.0)
    result = run_experiment(world, load_catalog(platform_settings.world_dir), lookup, weak, exp, models, policy,
                            pages=8000, seed=31)
    report = experiment_report(result.frame, "exp-test", "control",
                               ReportConfig(min_minutes=world.params.quality_minutes, bootstrap=300, seed=3))
    return result, report


def _shadow(report, name):
    return next(s for s in report["shadows"] if s["name"] == name)


def _covers(lo: float, hi: float, truth: float) -> bool:
    """The truth inside a 95% interval widened by half its width on each side (about 3.9
    standard errors instead of 1.96). Several intervals are checked on one simulated log;
    at the nominal width a correct estimator would miss one of them on about a third of
    logs (measured: 9 misses in 80 interval checks over 20 seeds, so about 89% coverage
    each), while the naive estimator misses by many times the width."""
    half = (hi - lo) / 2.0
    return lo - half <= truth <= hi + half


def test_truth_orders_the_shadows(run) -> None:
    """The construction holds: better > control > worse, by the ground truth."""
    result, report = run
    t = result.truth
    print("truth", t)
    for c in report["cells"]:
        print("cell", c["name"], c["impressions"], c["take_fraction"], c["lo"], c["hi"], c.get("lift"))
    for sh in report["shadows"]:
        print("shadow", sh["name"], sh["decisions"], "ips", sh["ips"], sh["lo"], sh["hi"], "snips", sh["snips"],
              "dr", sh["dr"], "ess", sh["ess"], "agree", sh["agreement"], "vs", sh["vs_control"])
    assert t["shadows"]["better"]["vs_control"] > 0.01
    assert t["shadows"]["worse"]["vs_control"] < -0.01


def test_cells_are_reported_with_intervals_covering_the_truth(run) -> None:
    result, report = run
    cells = {c["name"]: c for c in report["cells"]}
    assert set(cells) == {"control", "explore"}
    assert report["cells"][0]["name"] == "control"
    assert cells["control"]["impressions"] + cells["explore"]["impressions"] == report["impressions"]
    share = cells["control"]["members"] / (cells["control"]["members"] + cells["explore"]["members"])
    assert 0.6 < share < 0.8
    for name, c in cells.items():
        assert _covers(c["lo"], c["hi"], result.truth["cells"][name]), (name, c, result.truth["cells"][name])
        assert c["guardrails"]["fallback_share"] == 0.0
        assert c["guardrails"]["p99_ms"] > 0
        assert {"device", "country"} <= set(c["breakdowns"])
    assert "verdict" in cells["explore"]["lift"]


def test_shadow_estimates_cover_their_true_values(run) -> None:
    result, report = run
    for name in ("better", "worse"):
        sh = _shadow(report, name)
        truth = result.truth["shadows"][name]["value"]
        assert _covers(sh["lo"], sh["hi"], truth), (name, sh["ips"], sh["lo"], sh["hi"], truth)
        assert _covers(sh["dr"]["lo"], sh["dr"]["hi"], truth), (name, sh["dr"], truth)
        assert 0 < sh["ess"] <= sh["decisions"]
        assert 0.0 <= sh["agreement"] <= 1.0
    # DR's control variate is the shadow's own score: it tightens the interval of a calibrated
    # model; the "worse" model predicts P(no quality play), a poor reward model, and DR is wide.
    better = _shadow(report, "better")
    assert better["dr"]["hi"] - better["dr"]["lo"] <= 1.1 * (better["hi"] - better["lo"])


def test_better_shadow_detected_worse_refused(run) -> None:
    result, report = run
    better, worse = _shadow(report, "better"), _shadow(report, "worse")
    assert better["vs_control"]["verdict"] == "significant" and better["vs_control"]["lo"] > 0
    assert worse["vs_control"]["verdict"] == "harmful" and worse["vs_control"]["hi"] < 0
    for sh in (better, worse):  # the lift's interval covers the true lift over the control
        truth = result.truth["shadows"][sh["name"]]["vs_control"]
        assert _covers(sh["vs_control"]["lo"], sh["vs_control"]["hi"], truth), (sh["name"], sh["vs_control"], truth)


def test_ignoring_the_propensities_is_caught(run) -> None:
    """The estimate depends on the served propensities: with them all set to 1 (the
    naive 'mean reward where the shadow agreed'), the interval misses the truth."""
    result, _ = run
    frame = result.frame.copy()
    frame["propensity"] = 1.0
    naive = experiment_report(frame, "exp-test", "control",
                              ReportConfig(min_minutes=15.0, bootstrap=100, seed=3))
    truth = result.truth["shadows"]["better"]["value"]
    sh = _shadow(naive, "better")
    assert not _covers(sh["lo"], sh["hi"], truth), (sh["ips"], sh["lo"], sh["hi"], truth)


def test_members_never_switch_cell(run) -> None:
    result, _ = run
    per_member = result.frame.groupby("member_id")["cell"].nunique()
    assert (per_member == 1).all()


def test_shadow_failure_never_fails_the_page(index, served_model, world) -> None:
    from keyart.core.page import PageRequest, PageService
    from keyart.domain import RequestContext, TitleRequest

    def boom(x, ids=None):
        raise RuntimeError("boom")

    broken = replace(served_model, version="broken")
    broken.predict = boom  # a shadow artifact that breaks at serving
    exp = Experiment("exp-broken", cells=(Cell("control", 1.0),), control="control",
                     shadows=(Shadow("bad", "broken"),))

    class NoMembers:
        def get(self, member_id):
            return None  # cold start: served, not a fallback

    service = PageService(index, members=NoMembers(), policy=PolicyConfig(), feature_timeout_s=5.0,
                          request_budget_s=10.0)
    service.set_model(served_model)
    service.set_experiment(exp, {"broken": broken})
    titles = [TitleRequest(t) for t in sorted(index.catalog.titles)[:5]]
    ctx = RequestContext("US", "en", "TV", "home", world.now)
    result = service.rank(PageRequest("r1", "m-new", ctx, titles))
    assert all(not s.fallback_reason for s in result.selections)
    assert result.cell == "control" and result.experiment == "exp-broken"
    assert service.shadow_errors == 1
    service.close()

