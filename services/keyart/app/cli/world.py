"""`keyart world import DIR` / `keyart world export DIR`: bring your own catalog.

Mount on the existing world sub-app of keyart.app.cli.main::

    from keyart.app.cli.world import world_export_command, world_import_command
    world_app.command("import")(world_import_command)
    world_app.command("export")(world_export_command)

(or ``app.add_typer(world_import_app, name=...)`` for a stand-alone app holding both).
The file format is documented in keyart.jobs.world.import_schema. An invalid world
prints every problem found (the first 20 of each file, then ``<file>: and N more
problems``), one ``<file>, column '<col>', row <n>: <problem>`` per line (a single
problem: one line ``error: world import: <file>, column ...``), and exits with status 2.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from keyart.app.cli.support import console as _err
from keyart.app.cli.support import emit as _emit
from keyart.app.cli.support import friendly as _friendly
from keyart.app.cli.support import load_settings as _settings


@_friendly
def world_import_command(
    src: Annotated[
        Path, typer.Argument(help="Directory with members/titles/images/viewing.parquet (+ manifest.json).")
    ],
    now: Annotated[
        str | None,
        typer.Option("--now", help="End of the history, ISO-8601 with offset (overrides the manifest)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import your own catalog and viewing history as the world (atomic, validated).

    Every file is validated first (types, required columns, value rules such as ISO
    country codes, unique ids, references, tz-aware timestamps); on any problem
    nothing changes and every problem is listed. Then the world and its feature
    tables replace KEYART_DATA_DIR/world in one rename. Then
    `keyart up` loads the online store (`keyart features apply`) and serves, exploring
    uniformly until a first model is trained on the decision log and promoted.
    """
    from keyart.jobs.world.import_issues import Issue, WorldImportError
    from keyart.jobs.world.import_swap import import_world

    when = None
    if now is not None:
        try:
            when = datetime.fromisoformat(now)
        except ValueError:
            raise WorldImportError([Issue("--now", None, None, f"{now!r} is not ISO-8601")]) from None
        if when.tzinfo is None:
            raise WorldImportError([Issue("--now", None, None, f"{now!r} must carry a time zone")])
    s = _settings()
    try:
        result = import_world(src, s.world_dir, now=when)
    except WorldImportError as exc:
        # Customer values may hold "[...]": printed as text, never as rich markup.
        lines = str(exc).splitlines()
        _err.print(f"[red]error:[/red] {escape(lines[0])}", markup=True)
        for line in lines[1:]:
            _err.print(escape(line), markup=True)
        raise typer.Exit(2) from None
    marker = s.data_dir / "feast" / ".materialized"
    if marker.is_file():
        marker.unlink()  # the online store holds the previous world: `keyart up` re-applies
    # `keyart up` applies the features, then serves with no model yet: exploring uniformly.
    result["next"] = "keyart up (or keyart up --detach; README: First week of a new customer)"

    def human(r: dict[str, Any]) -> None:
        Console(highlight=False).print(
            f"world imported into {r['world_dir']}: {r['sizes']} (now {r['now']}); "
            f"next: {r['next']}"
        )
        for w in r["warnings"]:
            _err.print(f"warning: {w}")

    _emit(result, as_json, human)


@_friendly
def world_export_command(
    dst: Annotated[Path, typer.Argument(help="Directory to write (must be empty or new).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export the current world in the import format (no hidden ground truth)."""
    from keyart.jobs.world.export import export_world

    s = _settings()
    result = export_world(s.world_dir, dst)
    _emit(result, as_json, lambda r: Console(highlight=False).print(
        f"world exported to {r['dir']}: {r['rows']}"))


world_import_app = typer.Typer(
    help="Import or export a world (your own catalog) as Parquet files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
world_import_app.command("import")(world_import_command)
world_import_app.command("export")(world_export_command)

__all__ = ["world_export_command", "world_import_app", "world_import_command"]

