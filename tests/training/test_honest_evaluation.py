"""No in-sample estimates, by construction: the training window in meta.json, evaluation
only on later decisions (or marked in-sample), a gate that refuses in-sample evidence,
the README workflow, and baselines never fitted on the rows they score."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from keyart.app.cli.training import _load_frame, app
from keyart.core.model import current_version, load_model, promote
from keyart.errors import KeyartError
from keyart_training.data.dataset import DatasetError, label
from keyart_training.data.window import TrainingWindow, holdout_split, utc
from keyart_training.job import run_training
from keyart_training.ope.estimators import BanditData, argmax_probs, estimate
from keyart_training.ope.evaluate import (
    EvalConfig,
    InSampleError,
    crossfit_noncontextual,
    crossfit_reward_model,
    evaluate_log,
    fit_noncontextual_data,
    keyart_bandit_data,
    member_folds,
    noncontextual_flat_scores,
)
from keyart_training.ope.report import write_report
from keyart_training.promotion import PromotionError, promote_if_better
from keyart_training.train import TrainConfig

FAST = TrainConfig(num_leaves=7, max_rounds=60, early_stopping_rounds=10, min_data_in_leaf=20, ensemble_size=0,
                   num_threads=1)
EVAL = EvalConfig(bootstrap=60, min_minutes=15.0, breakdowns=())


def _times(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["decided_at"], utc=True)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, platform_settings, served_model) -> Path:
    """A private models dir: a copy of the served model, promoted."""
    d = tmp_path_factory.mktemp("models")
    shutil.copytree(platform_settings.models_dir / served_model.version, d / served_model.version)
    promote(d, served_model.version)
    return d


@pytest.fixture(scope="module")
def held_candidate(models_dir, later_log, world, index):
    """Trained on the older 80% of the later log, the newest 20% held out."""
    split = holdout_split(later_log, 0.2)
    data = label(split.train, world.params.quality_minutes, index.space)
    return run_training(data, models_dir, FAST, promote_after=False, source="later_log[:80%]",
                        holdout_from=split.holdout_from, holdout_share=0.2, holdout_rows=len(split.holdout))


@pytest.fixture(scope="module")
def full_candidate(models_dir, later_log, world, index):
    """Trained on every row of the later log: no decision of it is out of sample."""
    data = label(later_log, world.params.quality_minutes, index.space)
    return run_training(data, models_dir, FAST, promote_after=False, source="later_log")


# ----------------------------------------------------------------------------- meta.json and the hold-out


def test_meta_records_the_training_window(held_candidate, later_log):
    meta = json.loads((held_candidate.path / "meta.json").read_text())
    w = meta["training_window"]
    t = _times(later_log)
    cut = utc(w["holdout_from"])
    train, held = t[t < cut], t[t >= cut]
    assert utc(w["decided_from"]) == t.min()
    assert utc(w["decided_until"]) == train.max() < cut == held.min()
    assert w["rows"] == len(train) and w["holdout_rows"] == len(held) and w["holdout_share"] == 0.2
    assert w["source"] == "later_log[:80%]"
    window = TrainingWindow.of_meta(meta)
    assert window is not None and not window.legacy and window.decided_until == train.max()


def test_holdout_split_cuts_between_decision_times(later_log):
    split = holdout_split(later_log, 0.2)
    assert _times(split.train).max() < _times(split.holdout).min() == split.holdout_from
    assert len(split.train) + len(split.holdout) == len(later_log)
    # A page's titles share a decision time: no page is split, so the share is at least 0.2, by < 1 page.
    assert not set(split.train["request_id"]) & set(split.holdout["request_id"])
    assert 0.2 <= len(split.holdout) / len(later_log) < 0.2 + 11 / len(later_log)
    nothing = holdout_split(later_log, 0.0)
    assert len(nothing.train) == len(later_log) and nothing.holdout_from is None
    with pytest.raises(DatasetError, match="holdout-share"):
        holdout_split(later_log, 1.0)
    one_time = later_log.head(30).assign(decided_at=later_log["decided_at"].iloc[0])
    with pytest.raises(DatasetError, match="nothing older to train on"):
        holdout_split(one_time, 0.2)


def test_legacy_and_missing_windows():
    legacy = TrainingWindow.of_meta({"data_from": "2026-01-01 00:00:00", "data_until": "2026-01-02T00:00:00"})
    assert legacy is not None and legacy.legacy and legacy.decided_until == pd.Timestamp("2026-01-02", tz="UTC")
    assert TrainingWindow.of_meta({"version": "m-old"}) is None


# ----------------------------------------------------------------------------- evaluation after the window


def test_evaluation_scores_exactly_the_held_out_rows(held_candidate, served_model, later_log, index):
    models = {"current": served_model, "candidate": load_model(held_candidate.path)}
    r = evaluate_log(later_log, index, models, EVAL)
    meta = json.loads((held_candidate.path / "meta.json").read_text())
    assert r["in_sample"] is False and r["sample"]["in_sample_models"] == []
    assert utc(r["sample"]["decided_from"]) == utc(meta["training_window"]["holdout_from"])
    assert r["rows"] == r["sample"]["rows"] == meta["training_window"]["holdout_rows"]
    assert r["sample"]["members"] == later_log[_times(later_log) >= utc(r["sample"]["decided_from"])][
        "member_id"].nunique()
    # Baselines come from the older rows, disjoint from the scored ones.
    base = r["sample"]["baselines"]
    assert base["fitted_on"].startswith("older rows") and utc(base["decided_until"]) < utc(
        r["sample"]["decided_from"])


def test_evaluation_refuses_rows_inside_the_training_window(full_candidate, served_model, later_log, index):
    models = {"current": served_model, "candidate": load_model(full_candidate.path)}
    until = json.loads((full_candidate.path / "meta.json").read_text())["training_window"]["decided_until"]
    with pytest.raises(InSampleError) as err:
        evaluate_log(later_log, index, models, EVAL, source="log.parquet")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("log.parquet: no decision is later than")
    assert until in msg and full_candidate.version in msg and "--allow-in-sample" in msg


@pytest.fixture(scope="module")
def in_sample_evaluation(full_candidate, served_model, later_log, index):
    from dataclasses import replace

    models = {"current": served_model, "candidate": load_model(full_candidate.path)}
    return evaluate_log(later_log, index, models, replace(EVAL, allow_in_sample=True))


def test_allow_in_sample_marks_every_output(in_sample_evaluation, tmp_path):
    r = in_sample_evaluation
    assert r["in_sample"] is True and r["sample"]["in_sample"] is True
    assert r["sample"]["in_sample_models"] == ["candidate"]  # the served model's window ends before the log
    assert r["notes"][0].startswith("IN-SAMPLE: candidate")
    path = write_report(r, tmp_path)
    doc = path.read_text()
    assert "(IN-SAMPLE)</h1>" in doc and 'class="insample"' in doc
    assert json.loads((tmp_path / "evaluation.json").read_text())["in_sample"] is True


def test_gate_cannot_promote_on_in_sample_numbers(models_dir, in_sample_evaluation, full_candidate,
                                                  held_candidate, served_model, later_log, index):
    before = current_version(models_dir)
    assert before == served_model.version
    with pytest.raises(PromotionError, match="in-sample evidence"):
        promote_if_better(models_dir, full_candidate.version, before, in_sample_evaluation, min_lift=-1.0)
    # Claiming "out of sample" does not help: the gate checks the scored dates against meta.json.
    forged = copy.deepcopy(in_sample_evaluation)
    forged["in_sample"] = False
    forged["sample"].update(in_sample=False, in_sample_models=[])
    with pytest.raises(PromotionError, match="within or before the training window"):
        promote_if_better(models_dir, full_candidate.version, before, forged, min_lift=-1.0)
    legacy = {k: v for k, v in in_sample_evaluation.items() if k not in ("in_sample", "sample")}
    with pytest.raises(PromotionError, match="in-sample evidence"):
        promote_if_better(models_dir, full_candidate.version, before, legacy, min_lift=-1.0)
    assert current_version(models_dir) == before
    # The same gate passes honest evidence (min_lift -1: any lift clears it).
    honest = evaluate_log(later_log, index, {"current": served_model, "candidate": load_model(held_candidate.path)},
                          EVAL)
    decision = promote_if_better(models_dir, held_candidate.version, before, honest, min_lift=-1.0)
    try:
        assert decision.promoted and current_version(models_dir) == held_candidate.version
    finally:
        promote(models_dir, before)


def test_model_without_a_window_is_in_sample(served_model, later_log, index):
    meta = {k: v for k, v in served_model.meta.items() if k not in ("training_window", "data_from", "data_until")}
    old = copy.copy(served_model)
    old.meta = meta
    with pytest.raises(InSampleError, match="records no training window"):
        evaluate_log(later_log, index, {"current": old}, EVAL)
    from dataclasses import replace

    r = evaluate_log(later_log, index, {"current": old}, replace(EVAL, allow_in_sample=True))
    assert r["in_sample"] and r["sample"]["in_sample_models"] == ["current"]


# ----------------------------------------------------------------------------- the README workflow (CLI)


runner = CliRunner()


def test_readme_workflow_evaluates_the_held_out_rows(tmp_path, platform_settings, later_log, served_model):
    """log export -> train (holds out the newest 20%) -> evaluate --promote-if-better on the same file."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "world").symlink_to(platform_settings.world_dir)
    shutil.copytree(platform_settings.models_dir / served_model.version, data_dir / "models" / served_model.version)
    promote(data_dir / "models", served_model.version)
    env = {"KEYART_DATA_DIR": str(data_dir), "KEYART_FEATURE_REPO_DIR": str(platform_settings.feature_repo_dir)}
    log = tmp_path / "log.parquet"
    later_log.to_parquet(log)

    res = runner.invoke(app, ["train", "--log-export", str(log), "--ensemble-size", "0", "--threads", "1",
                              "--json"], env=env)
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    w = trained["training_window"]
    assert w["holdout_share"] == 0.2 and w["holdout_rows"] > 0.2 * len(later_log) - 1
    res = runner.invoke(app, ["evaluate", "--log-export", str(log), "--candidate", trained["version"],
                              "--bootstrap", "40", "--no-report", "--promote-if-better", "--min-lift", "-1",
                              "--json"], env=env)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["in_sample"] is False
    assert utc(r["sample"]["decided_from"]) == utc(w["holdout_from"]) and r["rows"] == w["holdout_rows"]
    assert r["gate"]["promoted"] is True and r["decision"]["would_promote"] is True

    # A model trained on the whole file cannot be evaluated on it ...
    res = runner.invoke(app, ["train", "--log-export", str(log), "--holdout-share", "0", "--ensemble-size", "0",
                              "--threads", "1", "--json"], env=env)
    assert res.exit_code == 0, res.output
    full = json.loads(res.stdout)["version"]
    res = runner.invoke(app, ["evaluate", "--log-export", str(log), "--candidate", full, "--no-report", "--json"],
                        env=env)
    assert res.exit_code == 2
    line = " ".join(res.output.split())
    assert "error: " in line and "no decision is later than" in line and full in line
    # ... and, scored in-sample on purpose, cannot be promoted.
    res = runner.invoke(app, ["evaluate", "--log-export", str(log), "--candidate", full, "--allow-in-sample",
                              "--bootstrap", "20", "--no-report", "--promote-if-better", "--min-lift", "-1",
                              "--json"], env=env)
    assert res.exit_code == 2 and "refusing to promote on in-sample evidence" in " ".join(res.output.split())
    assert current_version(data_dir / "models") == trained["version"]
    # Without --promote-if-better the report still leads with the verdict: refused, in-sample.
    out = tmp_path / "report"
    res = runner.invoke(app, ["evaluate", "--log-export", str(log), "--candidate", full, "--allow-in-sample",
                              "--bootstrap", "20", "--out", str(out), "--json"], env=env)
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["decision"]["refused"] is True and r["decision"]["would_promote"] is False and "gate" not in r
    page = (out / "evaluation.html").read_text()
    body = page[page.index("<body>"):]
    assert body.index("Decision: Do not promote") < body.index("<h2>Data</h2>")  # the verdict comes first
    assert "in-sample evidence" in page


def test_since_until_accept_ages_and_iso(tmp_path, mixed_log, platform_settings):
    log = tmp_path / "log.parquet"
    mixed_log.to_parquet(log)
    everything, _ = _load_frame(platform_settings, log, False, "36500d", "2100-01-01", 14.0)
    assert len(everything) == len(mixed_log)
    t = _times(mixed_log)
    mid = t.sort_values().iloc[len(t) // 2]
    later, source = _load_frame(platform_settings, log, False, mid.isoformat(), "2100-01-01T00:00:00Z", 14.0)
    assert len(later) == int((t >= mid).sum()) and mid.isoformat() in source
    with pytest.raises(KeyartError, match="--since: cannot read 'yesterday'"):
        _load_frame(platform_settings, log, False, "yesterday", None, 14.0)
    with pytest.raises(KeyartError, match="no decisions in"):
        _load_frame(platform_settings, log, False, "2099-01-01", "2100-01-01", 14.0)


# ----------------------------------------------------------------------------- baselines never see their rows


def _null_bandit(seed: int, titles: int = 40, k: int = 8, per_title: int = 400, rate: float = 0.2) -> BanditData:
    """Uniform logging, every image of every title with the same take rate: no image is better."""
    rng = np.random.default_rng(seed)
    n = titles * per_title
    title = np.repeat([f"t{i:03d}" for i in range(titles)], per_title)
    pos = rng.integers(0, k, n)
    offsets = np.arange(0, n * k + 1, k)
    candidates = np.array([f"{t}-i{j}" for t in title for j in range(k)], dtype=object)
    return BanditData(
        reward=(rng.random(n) < rate).astype(float), propensity=np.full(n, 1.0 / k), offsets=offsets,
        logged=offsets[:-1] + pos, candidates=candidates, uniform=np.ones(n, bool),
        groups=pd.DataFrame({"title_id": title, "member_id": rng.integers(0, n // 20, n).astype(str)}),
    )


def test_in_sample_non_contextual_bandit_is_optimistic_cross_fitted_is_not():
    """On a null world the bandit fitted on the rows it scores 'finds' the luckiest image per title and
    IPS reports a take rate far above the truth (0.2); cross-fitted in member folds it is honest."""
    data = _null_bandit(seed=4)
    from keyart_training.ope.estimators import bootstrap_clusters, bootstrap_counts

    counts = bootstrap_counts(data.n, 300, 1, bootstrap_clusters(data))
    in_sample = argmax_probs(noncontextual_flat_scores(fit_noncontextual_data(data, np.arange(data.n)), data), data)
    folds = member_folds(data, 3, seed=0)
    crossed = argmax_probs(crossfit_noncontextual(data, folds), data)
    bad = estimate(data, in_sample, counts=counts)["ips"]
    good = estimate(data, crossed, counts=counts)["ips"]
    assert bad.value > 0.24 and bad.lo > 0.2, bad
    assert abs(good.value - 0.2) < 0.03 and good.lo <= 0.2 <= good.hi, good


def test_cross_fitted_baselines_ignore_their_own_fold(later_log, index):
    """Flipping the outcomes of fold 0 changes no fold-0 prediction (and does change the others')."""
    data, _ = keyart_bandit_data(later_log.head(4000).reset_index(drop=True), index, 15.0)
    folds = member_folds(data, 3, seed=0)
    flat0 = folds[data.segment] == 0
    flipped = copy.copy(data)
    flipped.reward = np.where(folds == 0, 1.0 - data.reward, data.reward)
    for fit in (lambda d: crossfit_noncontextual(d, folds), lambda d: crossfit_reward_model(d, folds, seed=0)):
        a, b = fit(data), fit(flipped)
        np.testing.assert_array_equal(a[flat0], b[flat0])
        assert not np.allclose(a[~flat0], b[~flat0])
    assert set(data.groups["member_id"][folds == 0]).isdisjoint(data.groups["member_id"][folds != 0])


def test_evaluation_without_older_rows_cross_fits(held_candidate, served_model, later_log, index):
    from dataclasses import replace

    models = {"current": served_model, "candidate": load_model(held_candidate.path)}
    r = evaluate_log(later_log, index, models, replace(EVAL, min_fit_rows=10**9))
    assert r["sample"]["baselines"]["fitted_on"].startswith("cross-fitted in 3 member folds")
    assert r["in_sample"] is False and np.isfinite(r["policies"]["non_contextual"]["dr"]["value"])


def test_generic_best_action_is_chosen_on_other_rows():
    """60 null logs (20 actions, uniform logging, every action's take rate 0.05): chosen and
    scored on the same rows, best_action looks like ~0.08; chosen on the other folds it is
    unbiased (mean within 3 standard errors of 0.05)."""
    from keyart_training.ope.generic import bandit_data, best_action_probs, evaluate_bandit

    cross, same = [], []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        acts = [f"a{i:02d}" for i in range(20)]
        df = pd.DataFrame({"action": rng.choice(acts, 4000), "propensity": 1 / 20,
                           "reward": (rng.random(4000) < 0.05).astype(float)})
        df["actions"] = [acts] * len(df)
        cross.append(evaluate_bandit(df, EvalConfig(bootstrap=0))["policies"]["best_action"]["ips"]["value"])
        data, _ = bandit_data(df)
        same.append(estimate(data, best_action_probs(data))["ips"].value)
    se = np.std(cross) / np.sqrt(len(cross))
    assert abs(np.mean(cross) - 0.05) < 3 * se < 0.01, (np.mean(cross), se)
    assert np.mean(same) > 0.07
