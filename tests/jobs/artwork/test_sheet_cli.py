"""Contact sheet rendering and the `artwork` typer sub-app."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pandas as pd
from typer.testing import CliRunner

from keyart.app.cli.artwork import artwork_app
from keyart.domain import ImageInfo
from keyart.jobs.artwork.analysis import ArtworkError, ImageAnalysis
from keyart.jobs.artwork.sheet import draw_analysis, write_contact_png, write_contact_sheet


def test_contact_sheet_has_one_img_per_image(
    analyses: dict[str, ImageAnalysis], tmp_path: Path
) -> None:
    items: list[ImageAnalysis | ArtworkError] = list(analyses.values())
    items.append(ArtworkError(tmp_path / "broken.jpg", "corrupt or truncated image data"))
    out = write_contact_sheet(items, tmp_path / "sheet" / "index.html")
    text = out.read_text()
    assert len(re.findall(r"<img\b", text)) == len(analyses)
    assert text.count("data:image/jpeg;base64,") == len(analyses)
    assert "broken.jpg" in text and "corrupt or truncated" in text
    for name in analyses:
        assert name in text
    png = write_contact_png(items, tmp_path / "sheet.png", cell=200, cols=2)
    mosaic = cv2.imread(str(png))
    assert mosaic is not None and mosaic.shape[1] == 400


def test_drawing_marks_face_and_crops(analyses: dict[str, ImageAnalysis]) -> None:
    d = draw_analysis(analyses["astronaut"], thumb_side=256)
    assert d.image.shape[:2] == (256, 256)
    assert set(d.crops) == {"16:9", "2:3", "1:1", "4:3"} and all(b.ok for b in d.badges.values())
    x, y, w, _h = (v // 2 for v in analyses["astronaut"].faces[0])
    edge = d.image[y + 1, x + w // 2]  # top edge of the green face box
    assert edge[1] > 150 and edge[0] < 100 and edge[2] < 100


def test_cli_analyze_reports_errors_and_continues(photos: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(photos["coffee"].read_bytes()[:5000])
    rows = tmp_path / "rows.parquet"
    runner = CliRunner()
    res = runner.invoke(
        artwork_app,
        [
            "analyze",
            str(photos["astronaut"]),
            str(bad),
            str(trunc),
            str(photos["chelsea"]),
            "--out",
            str(rows),
            "--title-id",
            "t9",
        ],
    )
    assert res.exit_code == 1
    assert f"error: {bad}: not an image" in res.stderr
    assert f"error: {trunc}: corrupt or truncated" in res.stderr
    assert "astronaut.png: 512x512 faces=1" in res.stdout and "chelsea.png" in res.stdout
    df = pd.read_parquet(rows)
    assert list(df.columns) == [f.name for f in ImageInfo.__dataclass_fields__.values() if f.name != "attributes"]
    assert sorted(df.image_id) == ["astronaut", "chelsea"] and set(df.title_id) == {"t9"}
    assert df.set_index("image_id").loc["astronaut", "num_faces"] == 1


def test_cli_analyze_json_and_success_exit(photos: dict[str, Path]) -> None:
    res = CliRunner().invoke(artwork_app, ["analyze", str(photos["astronaut"]), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["errors"] == []
    (a,) = payload["analyses"]
    assert a["num_faces"] == 1 and set(a["crops"]) == {"16:9", "2:3", "1:1", "4:3"}
    assert not any(c["cuts_face"] for c in a["crops"].values())


def test_cli_sheet(photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.html"
    res = CliRunner().invoke(artwork_app, ["sheet", str(photo_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(re.findall(r"<img\b", out.read_text())) == len(list(photo_dir.iterdir()))
