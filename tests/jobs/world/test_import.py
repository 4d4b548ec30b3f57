"""`keyart world import/export`: round trip, validation messages, atomicity."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from keyart.adapters.catalog.parquet import load_catalog
from keyart.app.cli.world import world_import_app
from keyart.jobs.world.export import export_world
from keyart.jobs.world.features import FEATURE_TABLES, build_features
from keyart.jobs.world.import_issues import WorldImportError
from keyart.jobs.world.import_swap import import_world
from keyart.jobs.world.synthetic import build_world
from keyart.jobs.world.world_model import NoGroundTruth, load_world

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = build_world(tmp_path_factory.mktemp("syn") / "world", seed=5, members=80, titles=10, now=NOW)
    build_features(d)
    return d


@pytest.fixture(scope="module")
def exported(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "catalog"
    export_world(synthetic, out)
    return out


def test_round_trip_same_catalog_and_member_features(synthetic: Path, exported: Path, tmp_path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "images.parquet", "manifest.json", "members.parquet", "titles.parquet", "viewing.parquet"]
    assert "clickbait" not in pd.read_parquet(exported / "images.parquet").columns
    assert not any(c.startswith("latent_") for c in pd.read_parquet(exported / "members.parquet").columns)
    result = import_world(exported, tmp_path / "world")
    assert result["now"] == NOW.isoformat() and result["sizes"]["members"] == 80
    a, b = load_catalog(synthetic), load_catalog(tmp_path / "world")
    assert a.titles == b.titles and a.images == b.images
    for name in FEATURE_TABLES:
        pd.testing.assert_frame_equal(
            pd.read_parquet(synthetic / f"{name}.parquet"),
            pd.read_parquet(tmp_path / "world" / f"{name}.parquet"),
        )
    world = load_world(tmp_path / "world")
    assert not world.has_ground_truth and load_world(synthetic).has_ground_truth
    with pytest.raises(NoGroundTruth):
        world.quality_play_prob(np.array(["m00001"]), np.array([world.images["image_id"].iloc[0]]),
                                np.array(["TV"]))
    # Exporting the imported world gives the same files again.
    again = tmp_path / "again"
    export_world(tmp_path / "world", again)
    for name in ("members", "titles", "images", "viewing"):
        pd.testing.assert_frame_equal(pd.read_parquet(exported / f"{name}.parquet"),
                                      pd.read_parquet(again / f"{name}.parquet"))


def _edit(file: str, fn):
    def apply(d: Path) -> None:
        df = pd.read_parquet(d / file)
        df = fn(df)
        df.to_parquet(d / file, index=False)
    return apply


def _set(col: str, row: int, value):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df[col] = df[col].astype(object)
        df.at[row, col] = value
        return df
    return fn


def _other_titles_image(df: pd.DataFrame) -> pd.DataFrame:
    df.at[2, "default_image_id"] = df.at[0, "default_image_id"]
    return df


def _dup_member(df: pd.DataFrame) -> pd.DataFrame:
    df.at[4, "member_id"] = df.at[1, "member_id"]
    return df


BAD = [
    ("missing column", "members.parquet", lambda df: df.drop(columns=["country"]),
     "members.parquet", "country", None, "required column is missing"),
    ("wrong type", "members.parquet", lambda df: df.assign(tenure_days=df["tenure_days"].astype(str)),
     "members.parquet", "tenure_days", 0, "expected float, got string"),
    ("wrong type bool", "images.parquet", lambda df: df.assign(active=df["active"].astype(int)),
     "images.parquet", "active", 0, "expected bool"),
    ("label with whitespace", "images.parquet", _set("tone", 5, "sad "),
     "images.parquet", "tone", 5, "'sad ' has leading or trailing whitespace"),
    ("bad genre in list", "titles.parquet", _set("genres", 1, ["drama", "west\tern"]),
     "titles.parquet", "genres", 1, "contains a control character"),
    ("unknown country", "members.parquet", _set("country", 9, "XX"),
     "members.parquet", "country", 9, "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("closed device vocabulary", "members.parquet", _set("main_device", 2, "FRIDGE"),
     "members.parquet", "main_device", 2, "'FRIDGE' is not allowed"),
    ("dangling image title", "images.parquet", _set("title_id", 3, "t-nope"),
     "images.parquet", "title_id", 3, "'t-nope' is not a known title_id"),
    ("dangling default image", "titles.parquet", _set("default_image_id", 4, "i-nope"),
     "titles.parquet", "default_image_id", 4, "not an image_id"),
    ("default image of another title", "titles.parquet", _other_titles_image,
     "titles.parquet", "default_image_id", 2, "belongs to title"),
    ("unknown viewer", "viewing.parquet", _set("member_id", 7, "m-ghost"),
     "viewing.parquet", "member_id", 7, "not a known member_id"),
    ("duplicate id", "members.parquet", _dup_member,
     "members.parquet", "member_id", 4, "duplicate id"),
    ("naive timestamp", "viewing.parquet",
     lambda df: df.assign(event_timestamp=df["event_timestamp"].dt.tz_localize(None)),
     "viewing.parquet", "event_timestamp", 0, "timezone-aware"),
    ("null in required", "images.parquet", _set("lineage_id", 2, None),
     "images.parquet", "lineage_id", 2, "missing value"),
    ("out of range", "images.parquet", _set("face_area", 6, 1.5),
     "images.parquet", "face_area", 6, "out of range"),
    ("hidden ground truth", "images.parquet", lambda df: df.assign(clickbait=False),
     "images.parquet", "clickbait", None, "unknown column"),
]


@pytest.mark.parametrize("case, file, fn, e_file, e_col, e_row, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_files_name_file_column_row(exported: Path, tmp_path, case, file, fn, e_file, e_col, e_row,
                                        needle) -> None:
    src = tmp_path / "src"
    shutil.copytree(exported, src)
    _edit(file, fn)(src)
    with pytest.raises(WorldImportError) as info:
        import_world(src, tmp_path / "world")
    issue = info.value.first
    assert (issue.file, issue.column, issue.row) == (e_file, e_col, e_row), str(info.value)
    assert needle in str(info.value)
    where = f"{e_file}, column '{e_col}'" + (f", row {e_row}" if e_row is not None else "")
    assert where in str(info.value)
    assert not (tmp_path / "world").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no staging left behind


def test_missing_file_and_bad_manifest(exported: Path, tmp_path) -> None:
    src = tmp_path / "src"
    shutil.copytree(exported, src)
    (src / "viewing.parquet").unlink()
    (src / "manifest.json").write_text(json.dumps({"format": "keyart-world/1", "now": "2026-01-01T00:00:00"}))
    with pytest.raises(WorldImportError) as info:
        import_world(src, tmp_path / "world")
    text = str(info.value)
    assert "manifest.json, column 'now'" in text and "timezone-aware" in text
    assert "viewing.parquet: required file is missing" in text


def test_failed_import_leaves_previous_world_intact(exported: Path, tmp_path) -> None:
    world = tmp_path / "data" / "world"
    import_world(exported, world)
    before = {p.name: p.read_bytes() for p in world.iterdir()}
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    _edit("images.parquet", _set("style", 0, "x" * 65))(bad)
    with pytest.raises(WorldImportError):
        import_world(bad, world)

    def boom(_: Path) -> None:
        raise RuntimeError("feature derivation died")

    with pytest.raises(RuntimeError):
        import_world(exported, world, derive=boom)
    assert {p.name: p.read_bytes() for p in world.iterdir()} == before
    assert [p.name for p in world.parent.iterdir()] == ["world"]


runner = CliRunner()


def test_cli_import_export(exported: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KEYART_DATA_DIR", raising=False)
    env = {"KEYART_DATA_DIR": str(tmp_path / "data")}
    app = typer.Typer()
    app.add_typer(world_import_app, name="world")
    for cmd in (["world", "--help"], ["world", "import", "--help"], ["world", "export", "--help"]):
        assert runner.invoke(app, cmd).exit_code == 0
    marker = tmp_path / "data" / "feast" / ".materialized"
    marker.parent.mkdir(parents=True)
    marker.write_text("x")
    r = runner.invoke(app, ["world", "import", str(exported), "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sizes"]["titles"] == 10 and not marker.exists()
    r = runner.invoke(app, ["world", "export", str(tmp_path / "out"), "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "manifest.json").is_file()

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    _edit("members.parquet", _set("main_device", 3, "FRIDGE"))(bad)
    r = runner.invoke(app, ["world", "import", str(bad)], env=env)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: world import: members.parquet, "
                                                   "column 'main_device', row 3: 'FRIDGE'")
    r = runner.invoke(app, ["world", "import", str(exported), "--now", "2026-01-01"], env=env)
    assert r.exit_code == 2 and "time zone" in r.stderr
