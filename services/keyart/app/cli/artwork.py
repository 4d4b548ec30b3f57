"""`keyart artwork`: analyse artwork files and draw contact sheets.

Mount with ``app.add_typer(artwork_app, name="artwork")``. Each file that cannot be
analysed prints ``error: <file>: <reason>`` on stderr and the rest continue; the
exit status is 1 if any file failed, else 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from keyart.jobs.artwork.analysis import ArtworkError, ImageAnalysis, analyze_paths, to_image_row
from keyart.jobs.artwork.crops import crops_for

artwork_app = typer.Typer(
    help="Artwork analysis: faces, focal point, colour, text, crops and contact sheets.",
    no_args_is_help=True,
    add_completion=False,
)

PathsArg = Annotated[
    list[Path],
    typer.Argument(help="Image files (JPEG, PNG, WebP) or folders (searched recursively)."),
]
MaxSide = Annotated[
    int, typer.Option("--max-side", min=64, help="Analyse at most this many pixels per side.")
]


def _error(exc: ArtworkError) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {exc.path}: {exc.reason}", file=sys.stderr)  # keeps the bar intact
    sys.stderr.flush()


def _collect(paths: list[Path], max_side: int) -> tuple[list[ImageAnalysis], list[ArtworkError]]:
    ok: list[ImageAnalysis] = []
    bad: list[ArtworkError] = []
    for item in analyze_paths(paths, max_side=max_side):
        if isinstance(item, ArtworkError):
            _error(item)
            bad.append(item)
        else:
            ok.append(item)
    return ok, bad


def _human(a: ImageAnalysis) -> str:
    text = "text" if a.text_present else "no text"
    return (
        f"{a.path}: {a.width}x{a.height} faces={a.num_faces} face_area={a.face_area:.3f} "
        f"style={a.style} focal=({a.focal_x:.0f},{a.focal_y:.0f}) {a.focal_source} "
        f"palette={a.palette} brightness={a.brightness:.2f} warmth={a.warmth:+.2f} "
        f"contrast={a.contrast:.2f} {text} [{a.seconds * 1000:.0f} ms]"
    )


@artwork_app.command("analyze")
def analyze_cmd(
    paths: PathsArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print analyses as JSON on stdout.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write catalog image rows (ImageInfo columns) as parquet."),
    ] = None,
    title_id: Annotated[
        str | None,
        typer.Option("--title-id", help="title_id of every row (default: the file's folder name)."),
    ] = None,
    max_side: MaxSide = 1600,
) -> None:
    """Analyse images; image_id is the file stem and each file is its own lineage."""
    ok, bad = _collect(paths, max_side)
    if as_json:
        payload = [
            {**a.to_dict(), "crops": {k: vars(c) for k, c in crops_for(a).items()}} for a in ok
        ]
        sys.stdout.write(
            json.dumps(
                {
                    "analyses": payload,
                    "errors": [{"path": str(e.path), "reason": e.reason} for e in bad],
                },
                indent=2,
            )
            + "\n"
        )
    else:
        for a in ok:
            sys.stdout.write(_human(a) + "\n")
    if out is not None:
        import pandas as pd

        rows = []
        for a in ok:
            p = Path(a.path)
            rows.append(
                to_image_row(
                    a, image_id=p.stem, title_id=title_id or p.parent.name, lineage_id=p.stem
                )
            )
        ids = [r["image_id"] for r in rows]
        if len(set(ids)) != len(ids):
            sys.stderr.write(
                "error: duplicate file stems would give duplicate image ids; rename the files\n"
            )
            raise typer.Exit(1)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out, index=False)
        sys.stderr.write(f"wrote {len(rows)} row(s) to {out}\n")
    sys.stderr.write(f"{len(ok)} analysed, {len(bad)} failed\n")
    raise typer.Exit(1 if bad else 0)


@artwork_app.command("sheet")
def sheet_cmd(
    paths: PathsArg,
    out: Annotated[Path, typer.Option("--out", help="HTML contact sheet to write.")],
    png: Annotated[Path | None, typer.Option("--png", help="Also write a PNG mosaic here.")] = None,
    max_side: MaxSide = 1600,
) -> None:
    """Draw faces, focal point, crops and badge placements for an artist to check."""
    from keyart.jobs.artwork.sheet import write_contact_png, write_contact_sheet

    ok, bad = _collect(paths, max_side)
    items: list[ImageAnalysis | ArtworkError] = [*ok, *bad]
    write_contact_sheet(items, out)
    sys.stderr.write(f"wrote {out} ({len(ok)} image(s), {len(bad)} error(s))\n")
    if png is not None:
        write_contact_png(ok, png)
        sys.stderr.write(f"wrote {png}\n")
    raise typer.Exit(1 if bad else 0)


@artwork_app.command("ingest")
def ingest_cmd(
    paths: PathsArg,
    title_id: Annotated[str, typer.Option("--title-id", help="Title whose artwork pool gets the images.")],
    max_side: MaxSide = 1600,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Analyse images and add them (attributes and crops) to a title's pool in the catalog."""
    from keyart.errors import KeyartError
    from keyart.jobs.artwork.ingest import ingest_artwork
    from keyart.settings import KeyartSettings

    try:
        added, bad = ingest_artwork(paths, KeyartSettings().world_dir, title_id, max_side)
    except KeyartError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from None
    for err in bad:
        _error(err)
    if as_json:
        sys.stdout.write(json.dumps({"added": added, "errors": [str(e) for e in bad]}, indent=2) + "\n")
    else:
        sys.stderr.write(f"added {len(added)} image(s) to {title_id}: {', '.join(added)}; {len(bad)} failed\n")
    raise typer.Exit(1 if bad else 0)


def main() -> None:  # `python -m keyart.app.cli.artwork` until it is mounted in the main CLI
    artwork_app()


if __name__ == "__main__":
    main()
