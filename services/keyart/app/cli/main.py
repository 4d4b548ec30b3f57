"""`keyart`: the command line of the platform (typer).

Every command prints a one-line error naming the file or field on bad input and
exits with status 2; commands that report results take `--json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from keyart.app.cli.support import console, emit, friendly, load_settings

app = typer.Typer(help="Keyart: personalized artwork selection.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
world_app = typer.Typer(help="The synthetic demo world (members, titles, artwork, ground truth).", no_args_is_help=True)
features_app = typer.Typer(help="The Feast feature store.", no_args_is_help=True)
models_app = typer.Typer(help="Model artifacts and promotion.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")


def _mount_sub_apps() -> None:
    """Commands that live next to the code they drive."""
    from keyart.app.bench_features import bench_features_command
    from keyart.app.cli.artwork import artwork_app
    from keyart.app.cli.experiments import experiments_app
    from keyart.app.cli.log import log_app
    from keyart.app.cli.world import world_export_command, world_import_command

    app.add_typer(artwork_app, name="artwork", help="Artwork analysis: faces, focal points, crops, badges.")
    app.add_typer(log_app, name="log")
    app.add_typer(experiments_app, name="experiments")
    world_app.command("import")(world_import_command)
    world_app.command("export")(world_export_command)
    app.command("bench-features")(bench_features_command)


_mount_sub_apps()


def _mount_training() -> None:
    from keyart.app.cli.training import register

    register(app)  # train, evaluate, simulate, rollback


_mount_training()


settings = load_settings


# ----------------------------------------------------------------------------- world
@world_app.command("build")
@friendly
def world_build(
    seed: int = typer.Option(7, help="Random seed; the same seed gives the same world."),
    members: int = typer.Option(2000, help="Number of members."),
    titles: int = typer.Option(120, help="Number of titles."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Build the synthetic world and its feature tables under KEYART_DATA_DIR/world."""
    from keyart.app import build as bootstrap

    s = settings()
    out = bootstrap.build_world_and_features(s, seed=seed, members=members, titles=titles)
    emit(out, as_json, lambda r: console.print(f"world built in {r['world_dir']}: {r['sizes']}"))


# ----------------------------------------------------------------------------- features
@features_app.command("apply")
@friendly
def features_apply(as_json: bool = typer.Option(False, "--json")) -> None:
    """Register the feature definitions and materialize them into the online store."""
    from keyart.app import build as bootstrap

    out = bootstrap.apply_features(settings())
    emit(out, as_json, lambda r: console.print(f"feast applied and materialized: {r['repo']}"))


# ----------------------------------------------------------------------------- models
@models_app.command("list")
@friendly
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List model artifacts; the promoted one is marked."""
    from keyart.core.model import current_version

    s = settings()
    current = current_version(s.models_dir)
    rows = []
    for meta_path in sorted(s.models_dir.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        rows.append({"version": meta["version"], "current": meta["version"] == current,
                     "valid_auc": meta.get("metrics", {}).get("valid_auc"), "rows": meta.get("rows")})
    def human(r: dict[str, Any]) -> None:
        for m in r["models"]:
            console.print(f"{'*' if m['current'] else ' '} {m['version']}  auc={m['valid_auc']}  rows={m['rows']}")

    emit({"models": rows}, as_json, human)


@models_app.command("promote")
@friendly
def models_promote(
    version: str = typer.Argument(..., help="Model version to serve."),
    require_shadow: str = typer.Option("", "--require-shadow", metavar="EXPERIMENT",
                                       help="Promote only if VERSION's shadow in EXPERIMENT beats the control."),
    margin: float = typer.Option(0.0, help="Take fraction the shadow's lower bound must beat the control by."),
) -> None:
    """Serve VERSION from now on (running replicas pick it up within seconds, no restart).

    With --require-shadow, only when the live evidence says so: the lower bound of the
    shadow's lift over the control cell (its SNIPS value pooled over cells, minus the
    control's take fraction, member bootstrap) must exceed --margin.
    """
    from keyart.core.model import check_in_subprocess, promote

    s = settings()
    check_in_subprocess(s.models_dir / version)  # a corrupt forest kills that process, not this one
    if require_shadow:
        from keyart.app.cli.experiments import shadow_evidence

        sh = shadow_evidence(s, require_shadow, version, margin)
        vc = sh["vs_control"]
        console.print(f"shadow {sh['name']} beats the control by {vc['value']:+.4f} [{vc['lo']:+.4f}, "
                      f"{vc['hi']:+.4f}] ({sh['decisions']:,} live decisions)")
    if s.compiled_trees:  # compiled once here and cached, so serving replicas on this CPU load it at once
        from keyart.app.runtime import load_serving_model

        refused = load_serving_model(s, version).meta["compiled_trees"]["lightgbm"]
        if refused:
            console.print(f"[yellow]forests left on LightGBM: {', '.join(sorted(refused))}[/yellow]")
    promote(s.models_dir, version, checked=True)
    console.print(f"promoted {version}")


# ----------------------------------------------------------------------------- serving
@app.command("up")
@friendly
def up(
    port: int | None = typer.Option(None, help="gRPC port (default KEYART_GRPC_PORT, 9000)."),
    detach: bool = typer.Option(
        False, help="Start the server in the background, return once it is SERVING; `keyart down` stops it."),
    timeout: float = typer.Option(300.0, help="With --detach: seconds to wait for SERVING."),
) -> None:
    """Build what is missing (world, features, first model), then serve on Ray Serve.

    An imported catalog has no first model: it is served exploring uniformly until a
    model trained on its decision log is promoted.
    """
    from keyart.app import build as bootstrap
    from keyart.app import detach as daemon

    logging.basicConfig(level=logging.WARNING)
    s = settings()
    if port is not None:
        s = s.model_copy(update={"grpc_port": port})
    daemon.refuse_if_running(s)
    bootstrap.ensure_built(s, say=lambda m: console.print(m))
    if detach:
        record = daemon.start_detached(s, say=lambda m: console.print(m), timeout_s=timeout)
        console.print(
            f"READY keyart.v1.ArtworkRanker on 127.0.0.1:{record.port} (Ray Serve gRPC, in the background: "
            f"pid {record.pid}, log {daemon.log_path(s)}). Stop it with: .venv/bin/keyart down"
        )
        return
    from keyart.adapters.ray_serve.launch import launch

    with daemon.recorded(s, s.grpc_port):
        launch(s, say=lambda m: console.print(m), block=True)


@app.command("down")
@friendly
def down(
    timeout: float = typer.Option(60.0, help="Seconds to wait for a clean stop before SIGTERM, then SIGKILL."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Stop the server `keyart up` (or `keyart up --detach`) started for this data dir."""
    from keyart.app import detach as daemon

    out = daemon.stop_server(settings(), timeout_s=timeout)
    emit(out, as_json, lambda r: console.print(r["message"]))


@app.command("serve-bare")
@friendly
def serve_bare(port: int = typer.Option(9001, help="Port of the plain grpc.aio server.")) -> None:
    """Serve the same page service on a plain grpc.aio server (the benchmark's baseline)."""
    from keyart.app.serve import run_bare

    run_bare(settings(), port)


@app.command("demo")
@friendly
def demo(
    address: str = typer.Option("127.0.0.1:9000", help="Where RankArtwork is served."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Call RankArtwork for contrasting demo members and show which image each gets, and why."""
    from keyart.app.demo import render_demo, run_demo

    result = run_demo(settings(), address)
    emit(result, as_json, lambda r: render_demo(r, Console(width=max(120, Console().width))))


@app.command("bench")
@friendly
def bench(
    duration: float = typer.Option(8.0, help="Seconds per load level."),
    concurrency: str = typer.Option("1,8,32", help="Comma-separated requests in flight."),
    out: Path = typer.Option(Path("bench/results/latest.json"), help="Where to write the JSON."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """RankArtwork throughput and latency: Ray Serve vs the bare grpc.aio server."""
    from keyart.app.bench import run_bench

    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    result = run_bench(settings(), duration_s=duration, concurrencies=levels, out=out,
                       say=lambda m: console.print(m))
    emit(result, as_json, lambda r: console.print_json(json.dumps(r)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
