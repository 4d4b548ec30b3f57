"""`keyart bench-features`: the JSON carries sane p50/p99 figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from keyart.adapters.feast.repo import apply_and_materialize, prepare_feature_repo
from keyart.app.bench_features import bench_features, bench_features_command
from keyart.jobs.world.features import build_features
from keyart.jobs.world.synthetic import build_world
from keyart.settings import KeyartSettings

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> KeyartSettings:
    d = tmp_path_factory.mktemp("benchfeat")
    build_world(d / "world", seed=3, members=60, titles=45, now=NOW)
    build_features(d / "world")
    apply_and_materialize(prepare_feature_repo(d, ROOT / "features"), end=NOW)
    return KeyartSettings(data_dir=d, feature_repo_dir=ROOT / "features")


def test_bench_features_json_is_sane(settings: KeyartSettings) -> None:
    r = bench_features(settings, pages=40, warmup=5)
    assert r["pages"] == 40 and r["titles_per_page"] == 40 and r["candidates_per_title"] == 12
    assert 40 * 4 <= r["rows_per_page"] <= 480
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 1000
    assert 0 < r["lookup_p50_ms"] and 0 < r["matrix_p50_ms"]
    assert r["unknown_members"] == 0 and r["online_store"] == "sqlite"
    assert isinstance(r["within_target"], bool) and r["target_p99_ms"] == 3.0
    json.dumps(r)


def test_command_json_and_missing_world(settings: KeyartSettings, tmp_path) -> None:
    app = typer.Typer()
    app.command("bench-features")(bench_features_command)
    app.command("other")(lambda: None)
    runner = CliRunner()
    env = {"KEYART_DATA_DIR": str(settings.data_dir), "KEYART_FEATURE_REPO_DIR": str(ROOT / "features")}
    r = runner.invoke(app, ["bench-features", "--pages", "10", "--json"], env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["p50_ms"] > 0 and out["p99_ms"] >= out["p50_ms"]
    r = runner.invoke(app, ["bench-features"], env={"KEYART_DATA_DIR": str(tmp_path)})
    assert r.exit_code == 2 and r.stderr.startswith("error: bench-features: no world")
