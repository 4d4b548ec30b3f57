"""`keyart world import`: open vocabularies, optional columns, image attributes,
catalog.json, and every problem listed (issue #16, item 2)."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from keyart.adapters.catalog.parquet import catalog_files, load_catalog
from keyart.app.cli.world import world_import_app
from keyart.jobs.world.export import export_world
from keyart.jobs.world.features import build_features
from keyart.jobs.world.import_issues import MAX_ISSUES_PER_FILE, Issue, IssueLog, WorldImportError
from keyart.jobs.world.import_schema import IMAGES
from keyart.jobs.world.import_swap import import_world
from keyart.jobs.world.synthetic import build_world

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UTC_TS = pa.timestamp("us", tz="UTC")


def _members() -> pd.DataFrame:
    return pd.DataFrame({
        "member_id": ["m1", "m2", "m3", "m4"],
        "country": ["NZ", "US", "GB", "NZ"],
        "language": ["mi", "en", "en-GB", "zh-Hant-TW"],
        "main_device": ["TV", "MOBILE", "WEB", "TABLET"],
        # tenure_days left out: NaN (unknown)
    })


def _titles() -> pd.DataFrame:
    return pd.DataFrame({
        "title_id": ["t1", "t2"],
        # name and default_image_id left out
        "genres": [["anime"], ["romance", "drama"]],
        "cast": [["Aroha", "Ben"], ["Chen"]],
    })


def _images() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": ["i1", "i2", "i3", "i4"],
        "title_id": ["t1", "t1", "t1", "t2"],
        "num_faces": [2, 1, 0, 3],
        "expression": ["intense", "intense", None, "happy"],
        "tone": ["romantic", "anime", None, "romantic"],
        "active": [False, True, True, True],  # t1's first active image is i2
        "saliency": [0.5, None, 3.0, 0.25],
        "shot_type": ["wide", None, "close up", ""],
    })


def _viewing() -> pd.DataFrame:
    ts = pd.to_datetime(["2025-12-01T10:00", "2025-12-02T20:00", "2025-12-20T21:00"], utc=True)
    return pd.DataFrame({
        "member_id": ["m1", "m2", "m1"],
        "title_id": ["t1", "t2", "t2"],
        "event_timestamp": ts,
        "minutes_watched": [30.0, 95.0, 12.5],
    })


def _manifest() -> dict[str, Any]:
    return {
        "format": "keyart-world/1",
        "now": NOW.isoformat(),
        "history_days": 28,
        "image_attributes": {"saliency": "numeric", "shot_type": "categorical"},
        "vocabularies": {"country": ["AU"], "language": ["mi", "en-NZ"]},
        "tone_genre": {"romantic": "romance"},
    }


def _write(d: Path, members: pd.DataFrame | None = None, titles: pd.DataFrame | None = None,
           images: pd.DataFrame | None = None, manifest: dict[str, Any] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (members if members is not None else _members()).to_parquet(d / "members.parquet", index=False)
    (titles if titles is not None else _titles()).to_parquet(d / "titles.parquet", index=False)
    (images if images is not None else _images()).to_parquet(d / "images.parquet", index=False)
    viewing = pa.Table.from_pandas(_viewing(), preserve_index=False).cast(pa.schema([
        ("member_id", pa.string()), ("title_id", pa.string()),
        ("event_timestamp", UTC_TS), ("minutes_watched", pa.float64())]))
    pq.write_table(viewing, d / "viewing.parquet")
    (d / "manifest.json").write_text(json.dumps(manifest if manifest is not None else _manifest()))
    return d


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("open")
    world = base / "world"
    import_world(_write(base / "src"), world)
    return world


# ----------------------------------------------------------------------------- imports


def test_open_catalog_imports_with_defaults_and_catalog_json(imported: Path) -> None:
    assert {"catalog.json", "images.parquet", "members.parquet", "titles.parquet",
            "viewing.parquet", "world.json"} <= {p.name for p in imported.iterdir()}
    meta = json.loads((imported / "catalog.json").read_text())
    assert meta == {
        "image_attributes": {"saliency": "numeric", "shot_type": "categorical"},
        "vocabularies": {"country": ["AU", "GB", "NZ", "US"],
                         "language": ["en", "en-GB", "en-NZ", "mi", "zh-Hant-TW"]},
        "tone_genre": {"romantic": "romance"},
    }
    # The attribute columns come after the fixed ones.
    assert pq.read_schema(imported / "images.parquet").names == [*IMAGES.names, "saliency", "shot_type"]
    assert pd.read_parquet(imported / "members.parquet")["tenure_days"].isna().all()


def test_load_catalog_returns_open_values_and_defaults(imported: Path) -> None:
    cat = load_catalog(imported)
    assert cat.vocabularies == {"country": ("AU", "GB", "NZ", "US"),
                                "language": ("en", "en-GB", "en-NZ", "mi", "zh-Hant-TW")}
    assert cat.image_attributes == {"saliency": "numeric", "shot_type": "categorical"}
    assert cat.tone_genre == {"romantic": "romance"}
    t1, t2 = cat.titles["t1"], cat.titles["t2"]
    assert (t1.name, t1.genres, t1.default_image_id) == ("t1", ("anime",), "i2")  # first active image
    assert (t2.name, t2.default_image_id, t2.runtime_minutes, t2.villain_actor) == ("t2", "i4", 100.0, None)
    assert t1.image_ids == ("i1", "i2", "i3") and cat.pool("t1") == ("i2", "i3")
    i1, i2, i3 = cat.images["i1"], cat.images["i2"], cat.images["i3"]
    assert (i1.tone, i1.expression, i2.tone, i3.tone, i3.expression) == ("romantic", "intense", "anime", "", "")
    for img in (i1, i2, i3):
        assert all(math.isnan(v) for v in (img.face_area, img.brightness, img.warmth, img.contrast))
        assert img.group_size == img.num_faces and img.lineage_id == img.image_id
        assert (img.style, img.palette, img.villain_shown, img.text_present, img.cast_shown) == (
            "", "", False, False, ())
    assert i1.attributes == {"saliency": 0.5, "shot_type": "wide"}
    assert math.isnan(float(i2.attributes["saliency"])) and i2.attributes["shot_type"] == ""
    assert cat.images["i3"].attributes == {"saliency": 3.0, "shot_type": "close up"}
    assert imported / "catalog.json" in catalog_files(imported)


def test_catalog_version_covers_catalog_json(imported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "world"
    shutil.copytree(imported, copy)
    before = load_catalog(copy).version
    meta = json.loads((copy / "catalog.json").read_text())
    meta["tone_genre"] = {}
    (copy / "catalog.json").write_text(json.dumps(meta))
    assert load_catalog(copy).version != before


def test_older_world_files_get_defaults(tmp_path: Path) -> None:
    """A world without catalog.json nor the optional image columns (an older world)."""
    d = tmp_path / "world"
    d.mkdir()
    _members().to_parquet(d / "members.parquet", index=False)
    titles = _titles().assign(name=["One", "Two"], default_image_id=["i1", "i4"], villain_actor=[None, None],
                              runtime_minutes=[90.0, 120.0])
    titles.to_parquet(d / "titles.parquet", index=False)
    _images()[["image_id", "title_id", "num_faces"]].assign(clickbait=True).to_parquet(
        d / "images.parquet", index=False)
    cat = load_catalog(d)
    assert cat.vocabularies["country"] == ("GB", "NZ", "US") and cat.image_attributes == {}
    img = cat.images["i4"]
    assert (img.lineage_id, img.group_size, img.tone, img.active, img.attributes) == ("i4", 3, "", True, {})
    assert math.isnan(img.face_area)
    assert cat.titles["t1"].default_image_id == "i1"


def test_synthetic_world_exports_and_imports_with_vocabularies(tmp_path: Path) -> None:
    syn = build_world(tmp_path / "syn", seed=3, members=40, titles=6, now=NOW)
    build_features(syn)
    cat = load_catalog(syn)
    members = pd.read_parquet(syn / "members.parquet")
    assert cat.vocabularies["country"] == tuple(sorted(set(members["country"])))
    assert cat.vocabularies["language"] == tuple(sorted(set(members["language"])))
    export_world(syn, tmp_path / "exp")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["vocabularies"]["country"] == list(cat.vocabularies["country"])
    assert manifest["image_attributes"] == {} and manifest["tone_genre"] == {}
    import_world(tmp_path / "exp", tmp_path / "world")
    again = load_catalog(tmp_path / "world")
    assert again.titles == cat.titles and again.images == cat.images
    assert again.vocabularies == cat.vocabularies


def test_export_import_round_trips_attributes_and_vocabularies(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    export_world(imported, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_attributes"] == {"saliency": "numeric", "shot_type": "categorical"}
    assert manifest["vocabularies"]["country"] == ["AU", "GB", "NZ", "US"]  # AU: declared, no member
    assert manifest["tone_genre"] == {"romantic": "romance"}
    assert pq.read_schema(out / "images.parquet").names[-2:] == ["saliency", "shot_type"]
    world = tmp_path / "world"
    import_world(out, world)
    assert json.loads((world / "catalog.json").read_text()) == json.loads((imported / "catalog.json").read_text())
    for name in ("members", "titles", "images", "viewing"):
        pd.testing.assert_frame_equal(pd.read_parquet(imported / f"{name}.parquet"),
                                      pd.read_parquet(world / f"{name}.parquet"))
    a, b = load_catalog(imported), load_catalog(world)
    assert a.titles == b.titles and repr(a.images) == repr(b.images)  # repr: NaN == NaN
    assert (a.vocabularies, a.image_attributes, a.tone_genre) == (b.vocabularies, b.image_attributes, b.tone_genre)


# ----------------------------------------------------------------------------- refusals


def _members_with(col: str, row: int, value: Any) -> dict[str, Any]:
    df = _members()
    df.at[row, col] = value
    return {"members": df}


def _manifest_with(**keys: Any) -> dict[str, Any]:
    return {"manifest": {**_manifest(), **keys}}


def _images_with(**cols: Any) -> dict[str, Any]:
    return {"images": _images().assign(**cols)}


BAD: list[tuple[str, dict[str, Any], str, str | None, int | None, str]] = [
    ("unknown country", _members_with("country", 2, "XX"),
     "members.parquet", "country", 2, "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ("lowercase country", _members_with("country", 3, "nz"),
     "members.parquet", "country", 3, "'nz' must be uppercase ('NZ')"),
    ("language with newline", _members_with("language", 1, "en\n"),
     "members.parquet", "language", 1, "'en\\n' is not a language tag"),
    ("undeclared extra column", _images_with(mood=["a", "b", "c", "d"]),
     "images.parquet", "mood", None, "unknown column (declare your own image attributes"),
    ("declared attribute missing", {"images": _images().drop(columns=["shot_type"])},
     "images.parquet", "shot_type", None, "attribute declared in manifest.json (image_attributes) is missing"),
    ("bad attribute kind", _manifest_with(image_attributes={"saliency": "float", "shot_type": "categorical"}),
     "manifest.json", "image_attributes.saliency", None, "'float' is not an attribute kind"),
    ("attribute name clashes", _manifest_with(image_attributes={"tone": "numeric"}),
     "manifest.json", "image_attributes", None, "'tone' is a column of images.parquet already"),
    ("bad attribute name", _manifest_with(image_attributes={"Saliency": "numeric"}),
     "manifest.json", "image_attributes", None, "'Saliency' is not an attribute name"),
    ("tone_genre to an unknown genre", _manifest_with(tone_genre={"romantic": "romcom"}),
     "manifest.json", "tone_genre.romantic", None, "'romcom' is not a genre of titles.parquet"),
    ("bad declared country", _manifest_with(vocabularies={"country": ["AU", "xx"]}),
     "manifest.json", "vocabularies.country", 1, "'xx' is not an ISO 3166-1 alpha-2 country code"),
    ("unknown vocabulary", _manifest_with(vocabularies={"genre": ["anime"]}),
     "manifest.json", "vocabularies.genre", None, "unknown vocabulary (expected country, language)"),
    ("numeric attribute of strings", _images_with(saliency=["a", "b", "c", "d"]),
     "images.parquet", "saliency", 0, "expected float, got string"),
    ("categorical attribute with a control character", _images_with(shot_type=["wide", "x\x07", None, ""]),
     "images.parquet", "shot_type", 1, "contains a control character"),
    ("label too long", _images_with(expression=["intense", "x" * 65, None, "happy"]),
     "images.parquet", "expression", 1, "longer than 64 characters"),
    ("empty genre", {"titles": _titles().assign(genres=[["anime"], ["drama", ""]])},
     "titles.parquet", "genres", 1, "empty string"),
    ("title without any image", {"images": _images().iloc[:3].reset_index(drop=True)},
     "titles.parquet", "default_image_id", 1, "title 't2' has no image in images.parquet"),
]


@pytest.mark.parametrize("case, change, e_file, e_col, e_row, needle", BAD, ids=[b[0] for b in BAD])
def test_refused_naming_file_column_row(tmp_path: Path, case: str, change: dict[str, Any], e_file: str,
                                        e_col: str | None, e_row: int | None, needle: str) -> None:
    src = _write(tmp_path / "src", **change)
    with pytest.raises(WorldImportError) as info:
        import_world(src, tmp_path / "world")
    issue = info.value.first
    assert (issue.file, issue.column, issue.row) == (e_file, e_col, e_row), str(info.value)
    assert needle in issue.message, str(info.value)
    assert str(issue) in str(info.value)
    assert not (tmp_path / "world").exists()


def test_thirty_bad_rows_list_twenty_and_ten_more(tmp_path: Path) -> None:
    members = pd.DataFrame({
        "member_id": [f"m{i}" for i in range(1, 35)],
        "country": ["XX"] * 30 + ["NZ"] * 4,
        "language": ["en"] * 34,
        "main_device": ["TV"] * 34,
    })
    members.loc[33, "main_device"] = "FRIDGE"  # one more problem of a later column, beyond the cap
    images = _images()
    images.at[2, "tone"] = " sad"  # another file's problem is listed all the same
    src = _write(tmp_path / "src", members=members, images=images)
    with pytest.raises(WorldImportError) as info:
        import_world(src, tmp_path / "world")
    err = info.value
    kept = [i for i in err.issues if i.file == "members.parquet"]
    assert len(kept) == MAX_ISSUES_PER_FILE == 20
    assert [(i.column, i.row) for i in kept] == [("country", r) for r in range(20)]
    assert err.more == {"members.parquet": 11}  # 10 countries + the device
    assert any(i.file == "images.parquet" and i.column == "tone" and i.row == 2 for i in err.issues)
    lines = str(err).splitlines()
    assert lines[0] == "world import: 32 problems"
    assert lines[20].startswith("  members.parquet, column 'country', row 19: 'XX' is not an ISO 3166-1")
    assert lines[-1] == "  members.parquet: and 11 more problems"
    assert len(lines) == 1 + 20 + 1 + 1


def test_every_bad_row_of_a_column_is_listed(tmp_path: Path) -> None:
    src = _write(tmp_path / "src", **_members_with("country", 1, "XX"))
    df = pd.read_parquet(src / "members.parquet")
    df.at[3, "country"] = "nz"
    df.at[0, "language"] = "english language"
    df.to_parquet(src / "members.parquet", index=False)
    with pytest.raises(WorldImportError) as info:
        import_world(src, tmp_path / "world")
    assert [(i.column, i.row) for i in info.value.issues] == [("country", 1), ("country", 3), ("language", 0)]


def test_issue_log_caps_per_file_and_keeps_the_old_api() -> None:
    log = IssueLog()
    for row in range(25):
        log.add("a.parquet", "x", row, "bad")
    log.add("b.parquet", None, None, "missing")
    log.count("a.parquet", 5)
    assert len(log.items) == 21 and log.more == {"a.parquet": 10} and log.total == 31 and log
    err = log.error()
    assert err.total == 31 and err.first == Issue("a.parquet", "x", 0, "bad")
    assert str(err).splitlines()[-1] == "  a.parquet: and 10 more problems"
    single = WorldImportError([Issue("--now", None, None, "must be timezone-aware")])
    assert str(single) == "world import: --now: must be timezone-aware" and single.more == {}


runner = CliRunner()


def test_cli_prints_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYART_DATA_DIR", raising=False)
    app = typer.Typer()
    app.add_typer(world_import_app, name="world")
    members = _members()
    members.at[0, "country"] = "XX"
    members.at[2, "language"] = "en\n"
    images = _images()
    images.at[1, "tone"] = "[bold]dark "  # printed as text, not as rich markup
    src = _write(tmp_path / "src", members=members, images=images)
    r = runner.invoke(app, ["world", "import", str(src)], env={"KEYART_DATA_DIR": str(tmp_path / "data")})
    assert r.exit_code == 2, r.output
    lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0] == "error: world import: 3 problems"
    assert lines[1].startswith("members.parquet, column 'country', row 0: 'XX'")
    assert lines[2].startswith("members.parquet, column 'language', row 2: 'en\\n'")
    assert lines[3].startswith("images.parquet, column 'tone', row 1: '[bold]dark '")
    assert len(lines) == 4
