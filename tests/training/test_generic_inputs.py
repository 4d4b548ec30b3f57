"""Generic logged feedback (`keyart evaluate --bandit`): DM / SNDR / Switch-DR against their
formulas, ranked logs (slate_id, position), and every bad input refused with file, column, row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keyart_training.data.dataset import DatasetError
from keyart_training.ope.estimators import bootstrap_clusters, estimate
from keyart_training.ope.evaluate import EvalConfig, member_folds
from keyart_training.ope.generic import bandit_data, evaluate_bandit


def _random_log(n: int = 400, seed: int = 3) -> pd.DataFrame:
    """Logged decisions over 3 actions with non-uniform logging and a noisy reward model."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = rng.dirichlet(np.ones(3))
        a = int(rng.choice(3, p=p))
        target = rng.dirichlet(np.ones(3) * 0.5)
        rows.append({"action": a, "propensity": float(p[a]), "reward": float(rng.random() < 0.2 + 0.2 * a),
                     "actions": [0, 1, 2], "target_probs": list(target),
                     "reward_hat": list(np.clip(0.2 + 0.2 * np.arange(3) + rng.normal(0, 0.1, 3), 0, 1))})
    return pd.DataFrame(rows)


def test_dm_sndr_switch_dr_follow_their_formulas() -> None:
    df = _random_log()
    data, extras = bandit_data(df)
    pi, rhat = extras["target_probs"], extras["reward_hat"]
    w = pi[data.logged] / data.propensity
    dm = np.add.reduceat(pi * rhat, data.offsets[:-1])
    resid = data.reward - rhat[data.logged]
    est = estimate(data, pi, rhat, switch_tau=2.0)
    assert est["dm"].value == pytest.approx(dm.mean(), abs=1e-12)
    assert est["dr"].value == pytest.approx(np.mean(dm + w * resid), abs=1e-12)
    assert est["sndr"].value == pytest.approx(dm.mean() + np.sum(w * resid) / np.sum(w), abs=1e-12)
    assert est["switch_dr"].value == pytest.approx(np.mean(dm + (w <= 2.0) * w * resid), abs=1e-12)
    # An infinite threshold is DR; a zero threshold is DM.
    assert estimate(data, pi, rhat, switch_tau=np.inf)["switch_dr"].value == pytest.approx(est["dr"].value)
    assert estimate(data, pi, rhat, switch_tau=0.0)["switch_dr"].value == pytest.approx(est["dm"].value)


def test_new_estimators_cover_a_known_truth() -> None:
    """Uniform logging over 4 actions, reward rates known: every DR-family interval covers
    the target's true value, with a deliberately biased reward model."""
    rng = np.random.default_rng(11)
    rates = np.array([0.1, 0.2, 0.3, 0.4])
    n = 4000
    a = rng.integers(0, 4, n)
    target = np.array([0.1, 0.1, 0.2, 0.6])
    df = pd.DataFrame({"action": a, "propensity": 0.25, "reward": (rng.random(n) < rates[a]).astype(float),
                       "actions": [[0, 1, 2, 3]] * n, "target_probs": [list(target)] * n,
                       "reward_hat": [list(rates + 0.1)] * n})  # biased by +0.1
    r = evaluate_bandit(df, EvalConfig(bootstrap=200, seed=5))
    truth = float(target @ rates)
    got = r["policies"]["target"]
    for name in ("ips", "snips", "dr", "sndr", "switch_dr"):
        assert got[name]["lo"] <= truth <= got[name]["hi"], (name, got[name])
    assert got["dm"]["value"] == pytest.approx(truth + 0.1, abs=1e-9)  # DM keeps the model's bias


def test_bad_generic_inputs_name_file_column_and_row(known_bandit) -> None:
    dup = known_bandit()
    dup.at[4, "actions"] = ["x", "x", "z"]
    with pytest.raises(DatasetError, match=r"log\.parquet: column actions, row 4: action 'x' is listed 2 times"):
        bandit_data(dup, "log.parquet")
    stamp = known_bandit()
    stamp["reward"] = pd.Timestamp("2026-01-01", tz="UTC")
    with pytest.raises(DatasetError, match="column reward: is a datetime64.*not a number"):
        bandit_data(stamp, "log.parquet")
    with pytest.raises(DatasetError, match=r"log\.parquet: no rows"):
        bandit_data(known_bandit().iloc[:0], "log.parquet")
    with pytest.raises(DatasetError, match=r"--by column\(s\) contxt not in the file; its columns: action, context"):
        evaluate_bandit(known_bandit(), EvalConfig(bootstrap=0), by=("contxt",), source="log.parquet")


def _slates(n_slates: int = 300, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_slates):
        for pos in range(3):
            a = int(rng.integers(0, 4))
            rows.append({"slate_id": f"s{s}", "position": pos, "action": a, "propensity": 0.25,
                         "reward": float(rng.random() < 0.1 * (a + 1) / (pos + 1)), "actions": [0, 1, 2, 3],
                         "policy": "uniform"})
    return pd.DataFrame(rows)


def test_ranked_logs_slate_and_position() -> None:
    df = _slates()
    r = evaluate_bandit(df, EvalConfig(bootstrap=50))
    assert set(r["breakdowns"]["position"]) == {"0", "1", "2"}  # position is a breakdown by default
    first = r["breakdowns"]["position"]["0"]["policies"]["random"]["ips"]["value"]
    last = r["breakdowns"]["position"]["2"]["policies"]["random"]["ips"]["value"]
    assert first > last  # the top slot pays more in this log
    # Independent IPS of the slate value: the sum of its positions' values (uniform logging,
    # so the random policy's IIPS is the mean clicks per slate).
    iips = r["slates"]["random"]["iips"]
    assert iips["slates"] == 300
    assert iips["value"] == pytest.approx(df["reward"].sum() / 300, abs=1e-12)
    assert iips["lo"] <= iips["value"] <= iips["hi"]
    per_position = sum(r["breakdowns"]["position"][p]["policies"]["random"]["ips"]["value"] for p in "012")
    assert iips["value"] == pytest.approx(per_position, abs=1e-12)
    data, _ = bandit_data(df)
    clusters = bootstrap_clusters(data)
    assert clusters is not None and len(set(clusters)) == 300  # a slate is resampled whole
    folds = member_folds(data, 5)
    assert (pd.Series(folds).groupby(df["slate_id"]).nunique() == 1).all()  # and kept in one fold


def test_ranked_logs_refuse_bad_slates() -> None:
    twice = _slates(5)
    twice.at[4, "position"] = 0  # slate s1 already has position 0 at row 3
    with pytest.raises(DatasetError, match=r"columns slate_id/position, row 4: slate 's1' already has an item at "
                                           r"position 0"):
        bandit_data(twice, "ranked.parquet")
    gap = _slates(5)
    gap["slate_id"] = gap["slate_id"].astype(object)
    gap.at[6, "slate_id"] = None
    with pytest.raises(DatasetError, match="column slate_id, row 6: missing"):
        bandit_data(gap, "ranked.parquet")
    bandit_data(_slates(5).drop(columns=["slate_id"]), "ranked.parquet")  # positions alone: rows independent
    neg = _slates(5)
    neg.at[2, "position"] = -1
    with pytest.raises(DatasetError, match="column position, row 2: -1.0 is not an integer >= 0"):
        bandit_data(neg, "ranked.parquet")


def test_best_action_interval_holds_its_truth_on_a_log_with_no_best_action() -> None:
    """Uniform logs over 8 equally good actions: whatever best_action picks is worth exactly
    the common rate, and it is no better than random. Chosen again in every resample, its
    95 % interval holds the rate and its lift over random holds 0 in at least 9 of 10 logs."""
    held, no_lift = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        n = 2000
        df = pd.DataFrame({"action": rng.integers(0, 8, n), "propensity": 1 / 8,
                           "reward": (rng.random(n) < 0.05).astype(float), "actions": [list(range(8))] * n,
                           "member_id": rng.integers(0, 400, n).astype(str), "policy": "uniform"})
        r = evaluate_bandit(df, EvalConfig(bootstrap=100, seed=seed))
        e = r["policies"]["best_action"]["snips"]
        held += e["lo"] <= 0.05 <= e["hi"]
        lift = r["lifts"]["best_action_vs_random"]["snips"]
        no_lift += lift["lo"] <= 0.0 <= lift["hi"]
    assert held >= 9 and no_lift >= 9, (held, no_lift)


def test_json_output_has_no_nan() -> None:
    """An estimate with no rows to stand on is NaN in Python and null in the JSON we print."""
    import json

    from keyart.app.cli.support import json_safe

    doc = json.dumps(json_safe({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": np.array([np.nan, 2.0]),
                                "d": np.int64(3), "e": np.bool_(True)}), allow_nan=False)
    assert json.loads(doc) == {"a": None, "b": [1.5, None], "c": [None, 2.0], "d": 3, "e": True}
