"""Estimators: a hand-built bandit dataset with a known answer, agreement with the
synthetic world's truth, and a wrong propensity making IPS biased."""

from __future__ import annotations

import numpy as np
import pytest

from keyart_training.closed_loop import true_take_fraction
from keyart_training.data.dataset import DatasetError
from keyart_training.ope.estimators import argmax_probs, bootstrap_counts, estimate, uniform_probs
from keyart_training.ope.evaluate import (
    EvalConfig,
    PolicyView,
    candidate_matrix,
    estimate_policies,
    fit_noncontextual,
    keyart_bandit_data,
    noncontextual_flat_scores,
)
from keyart_training.ope.generic import bandit_data, evaluate_bandit


def test_generic_known_answer(known_bandit):
    df = known_bandit()
    r = evaluate_bandit(df, EvalConfig(bootstrap=50), by=("context",))
    target = r["policies"]["target"]
    for est in ("ips", "snips", "dr"):
        assert target[est]["value"] == pytest.approx(1.0, abs=1e-9), est
    assert target["replay"]["value"] == pytest.approx(1.0)  # uniform slice is context b
    # Random: in a, mean reward over actions = 1/3; in b, 1/3 as well.
    assert r["policies"]["random"]["ips"]["value"] == pytest.approx(1 / 3, abs=1e-9)
    assert r["policies"]["random"]["dr"]["value"] == pytest.approx(1 / 3, abs=1e-9)
    # Best single action: x (a) or z (b) each pay in half the contexts. It is chosen on the
    # other folds of each row (cross-fitted), so the value is 0.5 up to the folds' mix of contexts.
    assert r["policies"]["best_action"]["ips"]["value"] == pytest.approx(0.5, abs=0.05)
    assert set(r["breakdowns"]["context"]) == {"a", "b"}
    assert r["breakdowns"]["context"]["a"]["policies"]["target"]["ips"]["value"] == pytest.approx(1.0)


def test_generic_target_prob_only_and_errors(known_bandit):
    df = known_bandit()[["action", "propensity", "reward"]].copy()
    df["target_prob"] = 1.0 / 3
    r = evaluate_bandit(df, EvalConfig(bootstrap=0))
    assert r["policies"]["target"]["ips"]["value"] == pytest.approx(1 / 3, abs=1e-9)
    assert "dr" not in r["policies"]["target"]
    bad = known_bandit()
    bad.at[5, "actions"] = ["y", "z"]
    with pytest.raises(DatasetError, match="column actions, row 5: does not contain"):
        bandit_data(bad, "bad.parquet")
    bad = known_bandit()
    bad.at[7, "target_probs"] = [0.5, 0.2, 0.2]
    with pytest.raises(DatasetError, match="column target_probs, row 7"):
        bandit_data(bad, "bad.parquet")
    bad = known_bandit()
    bad.at[3, "propensity"] = 0.0
    with pytest.raises(DatasetError, match=r"bad\.parquet: column propensity, row 3"):
        bandit_data(bad, "bad.parquet")


def test_clipping_caps_weights(known_bandit):
    df = known_bandit()
    data, extras = bandit_data(df)
    probs = extras["target_probs"]
    plain = estimate(data, probs)
    clipped = estimate(data, probs, clip=2.0)
    assert clipped["ips"].value < plain["ips"].value  # weights of 3 (p=1/3) are capped at 2


def test_rebuilt_candidate_features_match_logged(mixed_log, index):
    data, dropped = keyart_bandit_data(mixed_log, index, 15.0)
    assert dropped == {"fallback_or_no_features": 0, "image_not_in_pool": 0}
    logged_x = np.stack(mixed_log["features"].to_numpy())
    np.testing.assert_allclose(data.x[data.logged], logged_x, rtol=1e-6, atol=1e-6)
    assert not data.notes
    # Without actor affinities the cast crosses are zeroed and the approximation is noted.
    no_actors = mixed_log.drop(columns=["top_actors", "top_actor_weights"])
    approx, _ = keyart_bandit_data(no_actors.head(100), index, 15.0)
    cast = [index.space.index[c] for c in ("cast_affinity", "max_cast_affinity", "cast_known", "max_cast_views")]
    assert approx.notes and (approx.x[:, cast] == 0).all()


def _world_setup(mixed_log, uniform_log, index, world, served_model):
    minutes = world.params.quality_minutes
    data, _ = keyart_bandit_data(mixed_log, index, minutes)
    nc = fit_noncontextual(uniform_log, minutes, None)
    rhat = served_model.predict(data.x, list(data.candidates))
    policies = {
        "random": uniform_probs(data),
        "non_contextual": argmax_probs(noncontextual_flat_scores(nc, data), data),
        "model": argmax_probs(served_model.predict(data.x, list(data.candidates)), data),
    }
    return data, policies, rhat


def test_estimators_agree_with_world_truth(mixed_log, uniform_log, index, world, served_model):
    data, policies, rhat = _world_setup(mixed_log, uniform_log, index, world, served_model)
    cfg = EvalConfig(bootstrap=300, confidence=0.99, breakdowns=(), seed=1)
    views = [PolicyView(k, p, rhat) for k, p in policies.items()]
    result = estimate_policies(data, views, cfg)
    for name, probs in policies.items():
        truth = true_take_fraction(world, data, probs)
        # Replay estimates the policy on the uniformly explored members' contexts only.
        truth_slice = true_take_fraction(world, data, probs, data.uniform)
        for est in ("replay", "ips", "snips", "dr"):
            e = result["policies"][name][est]
            target = truth_slice if est == "replay" else truth
            assert e["lo"] <= target <= e["hi"], (name, est, target, e)


def test_wrong_propensity_biases_ips(mixed_log, uniform_log, index, world, served_model):
    """Logging that favoured the model's pick, recorded as if it were uniform: IPS of the
    model's greedy policy is then far above the truth, and the interval misses it."""
    data, policies, _ = _world_setup(mixed_log, uniform_log, index, world, served_model)
    truth = true_take_fraction(world, data, policies["model"])
    counts = bootstrap_counts(data.n, 300, 2)
    right = estimate(data, policies["model"], counts=counts, confidence=0.99)["ips"]
    assert right.lo <= truth <= right.hi
    data.propensity = 1.0 / data.sizes  # the lie: "every image was equally likely"
    wrong = estimate(data, policies["model"], counts=counts, confidence=0.99)["ips"]
    assert wrong.lo > truth and wrong.value > 1.5 * truth


def test_candidate_matrix_copies_member_columns(index):
    names = index.space.names
    width = index.space.context_width
    x = np.arange(2 * len(names), dtype=np.float32).reshape(2, -1) % 7
    rows = np.array([0, 1, 2])
    out = candidate_matrix(x, index, rows, np.array([0, 0, 1]), None)
    assert out.shape == (3, len(names))
    assert (out[1, :width] == x[0, :width]).all() and (out[2, :width] == x[1, :width]).all()
    cols = [names.index(n) for n in index.space.image_features]
    np.testing.assert_array_equal(out[:, cols], index.image_matrix[rows])
