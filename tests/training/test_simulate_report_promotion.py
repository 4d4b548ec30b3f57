"""Closed-loop ordering, the HTML report, the promotion gate and rollback, the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from keyart.app.cli.training import app
from keyart.core.model import current_version, load_model, promote
from keyart_training.closed_loop import LoopConfig, closed_loop
from keyart_training.data.dataset import label
from keyart_training.job import run_training
from keyart_training.ope.evaluate import EvalConfig, contrasting_profiles, evaluate_log
from keyart_training.ope.report import write_report
from keyart_training.promotion import PromotionError, promote_if_better, rollback
from keyart_training.train import TrainConfig

SMALL_LOOP = LoopConfig(rounds=2, pages_first=2000, pages_per_round=1500, pages_last=5000, bootstrap=100,
                        max_rounds=150, uniform_share=0.5)


def test_closed_loop_orders_policies(world, index, lookup):
    r = closed_loop(world, index, lookup, SMALL_LOOP)
    table = {row["policy"]: row for row in r["table"]}
    assert r["ordered_truth"], table
    assert r["ordered_replay"], table
    for row in r["table"]:  # replay is unbiased: within 3 standard errors of the truth on its slice
        se = (row["replay_hi"] - row["replay_lo"]) / (2 * 1.96)
        assert abs(row["replay"] - row["truth_uniform_slice"]) <= 3 * se, row
    # The served policy rebuilt offline is exactly the logging policy: every importance
    # weight is 1, so IPS is the logged mean, and its truth is what was served.
    served = table["contextual_served"]
    assert served["ips_max_weight"] == pytest.approx(1.0) and served["ips_ess"] == pytest.approx(r["eval_rows"])
    assert served["ips"] == pytest.approx(served["snips"])
    assert served["ips_lo"] <= served["truth"] <= served["ips_hi"]
    assert table["random"]["truth"] < served["truth"] < table["contextual"]["truth"]


@pytest.fixture(scope="module")
def candidate(platform_settings, later_log, world, index):
    """A candidate trained on the older half of the later log (saved, not promoted).

    The later log starts after the served model's training window, so both models can
    be scored out of sample on its newer half."""
    old = later_log.sort_values("decided_at").iloc[: len(later_log) // 2]
    data = label(old, world.params.quality_minutes, index.space)
    cfg = TrainConfig(num_leaves=15, max_rounds=100, ensemble_size=0, num_threads=1)
    return run_training(data, platform_settings.models_dir, cfg, promote_after=False, source="test-candidate")


@pytest.fixture(scope="module")
def evaluation(platform_settings, later_log, index, candidate, served_model):
    models = {"current": served_model, "candidate": load_model(candidate.path)}
    return evaluate_log(later_log, index, models, EvalConfig(bootstrap=100, min_minutes=15.0))


def test_evaluation_has_policies_breakdowns_and_lifts(evaluation):
    assert set(evaluation["policies"]) == {"random", "non_contextual", "current", "candidate", "current_served",
                                           "candidate_served"}
    # The served policy explores: epsilon-greedy's value lies between random's and greedy's (up to noise).
    served, greedy = evaluation["policies"]["candidate_served"]["ips"], evaluation["policies"]["candidate"]["ips"]
    assert abs(served["value"] - greedy["value"]) < 0.1 * abs(greedy["value"]) + 0.01
    for pol in evaluation["policies"].values():
        assert set(pol) == {"replay", "ips", "snips", "dr", "dm", "sndr", "switch_dr"}
        assert all(0.0 <= e["ess"] and e["lo"] <= e["hi"] for e in pol.values())
    assert {"country", "device", "title_interacted"} <= set(evaluation["breakdowns"])
    assert set(evaluation["breakdowns"]["title_interacted"]) <= {"interacted", "not_interacted"}
    assert "candidate_vs_current" in evaluation["lifts"]


def test_report_renders_with_embedded_plots(evaluation, later_log, index, candidate, tmp_path):
    profiles = contrasting_profiles(later_log, index, load_model(candidate.path), n_titles=3)
    assert len(profiles["profiles"]) == 4 and all(len(p["picks"]) == 3 for p in profiles["profiles"])
    path = write_report(evaluation, tmp_path / "evaluation", profiles)
    doc = path.read_text()
    assert doc.startswith("<!doctype html>")
    imgs = re.findall(r'alt="(\w+)" src="data:image/png;base64,', doc)
    assert {"policies", "by_country", "by_device", "by_title_interacted", "profiles"} <= set(imgs)
    data = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert data["policies"]["random"]["ips"]["value"] == evaluation["policies"]["random"]["ips"]["value"]


def test_promotion_gate_and_rollback(platform_settings, evaluation, candidate, served_model):
    models_dir = platform_settings.models_dir
    before = current_version(models_dir)
    assert before == served_model.version
    lift = evaluation["lifts"]["candidate_vs_current"]["dr"]
    # A margin above the interval's lower end is refused and nothing changes.
    refused = promote_if_better(models_dir, candidate.version, before, evaluation, min_lift=lift["lo"] + 0.01)
    assert not refused.promoted and current_version(models_dir) == before
    with pytest.raises(PromotionError):
        promote_if_better(models_dir, "m-other", before, evaluation)
    # A margin below the lower end passes; rollback restores the previous model.
    passed = promote_if_better(models_dir, candidate.version, before, evaluation, min_lift=lift["lo"] - 0.01)
    try:
        assert passed.promoted and current_version(models_dir) == candidate.version
        assert rollback(models_dir) == before
        assert current_version(models_dir) == before
    finally:
        promote(models_dir, before)


runner = CliRunner()


def _env(settings):
    return {"KEYART_DATA_DIR": str(settings.data_dir), "KEYART_FEATURE_REPO_DIR": str(settings.feature_repo_dir)}


def test_cli_help_for_every_command():
    for cmd in ("train", "evaluate", "simulate", "rollback"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "--json" in res.output


def test_cli_evaluate_json_and_bad_file(platform_settings, later_log, candidate, tmp_path):
    path = tmp_path / "log.parquet"
    later_log.to_parquet(path)
    out = tmp_path / "report"
    res = runner.invoke(app, ["evaluate", "--log-export", str(path), "--candidate", candidate.version,
                              "--bootstrap", "30", "--out", str(out), "--json"], env=_env(platform_settings))
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["policy_info"]["candidate"]["version"] == candidate.version
    assert result["in_sample"] is False
    until = json.loads((candidate.path / "meta.json").read_text())["training_window"]["decided_until"]
    assert pd.Timestamp(result["sample"]["decided_from"]) > pd.Timestamp(until)
    assert (out / "evaluation.html").is_file()
    d = result["decision"]  # the gate's dry-run verdict, also without --promote-if-better
    assert d["candidate"] == candidate.version and d["promoted"] is False and "gate" not in result
    assert d["would_promote"] == (d["lo"] > d["min_lift"])
    body = (out / "evaluation.html").read_text().split("<body>", 1)[1]
    verdict = "Decision: Promote" if d["would_promote"] else "Decision: Keep"
    assert body.index(verdict) < body.index("<h2>Data</h2>") < body.index("<table><tr><th>policy</th>")
    bad = later_log.head(20).copy()
    bad.loc[bad.index[4], "propensity"] = 2.0
    bad.to_parquet(path)
    res = runner.invoke(app, ["evaluate", "--log-export", str(path), "--json"], env=_env(platform_settings))
    assert res.exit_code == 2
    assert "log.parquet: column propensity, row 4: 2.0 is not in (0, 1]" in " ".join(res.output.split())


def test_cli_generic_bandit(tmp_path, known_bandit):
    path = tmp_path / "bandit.parquet"
    known_bandit().to_parquet(path)
    res = runner.invoke(app, ["evaluate", "--bandit", str(path), "--by", "context", "--bootstrap", "20", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert np.isclose(r["policies"]["target"]["dr"]["value"], 1.0)
    # --fit-share: the oldest share (file order: no timestamp column) fits best_action, the rest is scored.
    split = runner.invoke(app, ["evaluate", "--bandit", str(path), "--fit-share", "0.3", "--bootstrap", "20",
                                "--json"])
    assert split.exit_code == 0, split.output
    r = json.loads(split.stdout)
    assert r["rows"] == len(known_bandit()) - round(0.3 * len(known_bandit())) and "oldest 30%" in r["baselines"]
    for flags, what in ((["--fit-share", "1.0"], "--fit-share: 1.0 is not in (0, 1)"),
                        (["--reward-model", "self"], "--reward-model self needs a Keyart model"),
                        (["--by", "contxt"], "--by column(s) contxt not in the file")):
        bad = runner.invoke(app, ["evaluate", "--bandit", str(path), "--bootstrap", "0", *flags])
        assert bad.exit_code != 0 and what in bad.output, (flags, bad.output)
        assert "Traceback" not in bad.output
    empty = tmp_path / "empty.parquet"
    known_bandit().iloc[:0].to_parquet(empty)
    bad = runner.invoke(app, ["evaluate", "--bandit", str(empty), "--json"])
    assert bad.exit_code != 0 and "no rows to evaluate" in bad.output
