"""`keyart experiments`: start, change, stop and list online experiments, and report them.

Serving replicas watch the running experiment (`settings.experiments_dir`) and swap it
in within seconds, like a promoted model; see `keyart.adapters.experiments` for the file.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from keyart.app.cli.support import console, emit, friendly, load_settings
from keyart.errors import KeyartError

experiments_app = typer.Typer(help="Online experiments: cells of members and shadow models.", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _check_models(settings: Any, exp: Any, source: str) -> None:
    """Every model the experiment names exists and loads (before any replica tries)."""
    from keyart.core.model import load_model

    fields = [(f"cells[{i}].model", c.model) for i, c in enumerate(exp.cells) if c.model != "current"]
    fields += [(f"shadows[{i}].model", s.model) for i, s in enumerate(exp.shadows)]
    for field, version in fields:
        path = settings.models_dir / version
        if not (path / "meta.json").exists():
            raise KeyartError(f"{source}: {field}: no model {version!r} in {settings.models_dir}")
        try:
            load_model(path)
        except KeyartError as exc:
            raise KeyartError(f"{source}: {field}: model {version!r} cannot be served: {exc}") from None


@experiments_app.command("start")
@friendly
def start(file: Annotated[Path, typer.Argument(help="Experiment file (YAML or JSON).")],
          as_json: AsJson = False) -> None:
    """Run the experiment FILE declares, or change the running one of the same id.

    Refused, with the running experiment untouched, when the file is invalid, a model it
    names does not load, another experiment runs, or a change would move members between cells.
    """
    from keyart.adapters.experiments import ExperimentStore, experiment_to_dict, parse_experiment

    s = load_settings()
    exp = parse_experiment(file)
    _check_models(s, exp, str(file))
    running = ExperimentStore(s.experiments_dir).start(exp, source=str(file))
    result = experiment_to_dict(running)

    def human(r: dict[str, Any]) -> None:
        cells = ", ".join(f"{c['name']} {c['share']:.0%}" for c in r["cells"])
        shadows = ", ".join(sh["name"] for sh in r["shadows"]) or "none"
        console.print(f"running {r['experiment']} (revision {r['revision']}): cells {cells}; shadows {shadows}")

    emit(result, as_json, human)


@experiments_app.command("stop")
@friendly
def stop(experiment: Annotated[str, typer.Argument(help="Experiment id.")], as_json: AsJson = False) -> None:
    """Stop EXPERIMENT: every member is served as before it within seconds."""
    from keyart.adapters.experiments import ExperimentStore

    record = ExperimentStore(load_settings().experiments_dir).stop(experiment)
    emit(record, as_json, lambda r: console.print(f"stopped {experiment} at {r['stopped_at']}"))


@experiments_app.command("list")
@friendly
def list_experiments(as_json: AsJson = False) -> None:
    """Every experiment, oldest first, with its status."""
    from keyart.adapters.experiments import ExperimentStore

    records = ExperimentStore(load_settings().experiments_dir).list()

    def human(r: dict[str, Any]) -> None:
        if not r["experiments"]:
            console.print("no experiments")
        for rec in r["experiments"]:
            d = rec["definition"]
            cells = ", ".join(f"{c['name']} {c['share']:.0%}" for c in d["cells"])
            console.print(f"{rec['status']:8} {d['experiment']}  started {rec['started_at']}  cells {cells}  "
                          f"shadows {len(d['shadows'])}")

    emit({"experiments": records}, as_json, human)


def build_report(settings: Any, experiment: str, log_export: Optional[Path] = None,
                 bootstrap: int = 200, seed: int = 7) -> dict[str, Any]:
    """The report of EXPERIMENT from an exported log, or from the decision log over its lifetime."""
    import pandas as pd

    from keyart.adapters.catalog.spaces import known_spaces
    from keyart.adapters.experiments import ExperimentStore, experiment_from_dict
    from keyart.app.cli.training import _min_minutes
    from keyart_training.experiment_report import ReportConfig, experiment_report

    record = ExperimentStore(settings.experiments_dir).record(experiment)
    if record is None:
        raise KeyartError(f"no experiment {experiment!r} in {settings.experiments_dir}")
    exp = experiment_from_dict(record["definition"])
    if log_export is None:
        from keyart.adapters.decision_log.export import export_parquet
        from keyart.adapters.decision_log.factory import open_log_store

        since = datetime.fromisoformat(record["started_at"]) - timedelta(minutes=1)
        until = datetime.fromisoformat(record["stopped_at"]) if record["stopped_at"] else datetime.now(UTC)
        with tempfile.TemporaryDirectory() as tmp:
            store = open_log_store(settings)
            try:
                export_parquet(store, since, until + timedelta(minutes=1), Path(tmp) / "log.parquet")
            finally:
                store.close()
            frame = pd.read_parquet(Path(tmp) / "log.parquet")
    else:
        try:
            frame = pd.read_parquet(log_export)
        except Exception as exc:
            raise KeyartError(f"{log_export}: cannot read as Parquet: {exc}") from None
    spaces = known_spaces(settings.feature_spaces_dir, settings.models_dir)

    def familiar_column(schema: str) -> int | None:
        space = spaces.get(schema)
        return space.names.index("title_interacted") if space and "title_interacted" in space.names else None

    cfg = ReportConfig(min_minutes=_min_minutes(settings, None), bootstrap=bootstrap, seed=seed)
    report = experiment_report(frame, exp.experiment_id, exp.control, cfg, familiar_column)
    report.update(status=record["status"], started_at=record["started_at"], stopped_at=record["stopped_at"],
                  revision=exp.revision)
    return report


@experiments_app.command("report")
@friendly
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment id.")],
    log_export: Annotated[Optional[Path], typer.Option("--log-export", help="Exported log (Parquet); "
                                                       "default: the decision log over the experiment's life.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write the report as an HTML page.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Member-level bootstrap resamples.", min=20)] = 200,
    as_json: AsJson = False,
) -> None:
    """Per cell take fraction, lift and verdict; per shadow IPS, SNIPS and DR with ESS."""
    from keyart_training.experiment_report import report_html

    result = build_report(load_settings(), experiment, log_export, bootstrap)
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(report_html(result), "utf-8")

    def human(r: dict[str, Any]) -> None:
        console.print(f"{r['experiment']} ({r['status']}): {r['impressions']:,} impressions, {r['members']:,} members")
        for c in r["cells"]:
            lift = c.get("lift")
            tail = (f"lift {lift['value']:+.4f} [{lift['lo']:+.4f}, {lift['hi']:+.4f}] {lift['verdict']}"
                    if lift else "control")
            console.print(f"  cell {c['name']}: {c['impressions']:,} impressions, take {c['take_fraction']:.4f} "
                          f"[{c['lo']:.4f}, {c['hi']:.4f}]; {tail}")
        for sh in r["shadows"]:
            vc = sh["vs_control"]
            console.print(f"  shadow {sh['name']} ({sh['model_version']}): IPS {sh['ips']:.4f} [{sh['lo']:.4f}, "
                          f"{sh['hi']:.4f}], SNIPS {sh['snips']['value']:.4f}, DR {sh['dr']['value']:.4f}, "
                          f"ESS {sh['ess']:,.0f}, agreement {sh['agreement']:.0%}; vs control "
                          f"{vc['value']:+.4f} [{vc['lo']:+.4f}, {vc['hi']:+.4f}] {vc['verdict']}")
        if html_out is not None:
            console.print(f"  html: {html_out}")

    emit(result, as_json, human)


def shadow_evidence(settings: Any, experiment: str, version: str, margin: float) -> dict[str, Any]:
    """The shadow of VERSION in EXPERIMENT, if its lower bound against the control clears margin;
    else KeyartError saying what the evidence is."""
    result = build_report(settings, experiment)
    shadows = [sh for sh in result["shadows"] if sh["model_version"] == version]
    if not shadows:
        names = ", ".join(f"{sh['name']} ({sh['model_version']})" for sh in result["shadows"]) or "none"
        raise KeyartError(f"--require-shadow: experiment {experiment!r} has no shadow of model {version!r} "
                          f"(its shadows: {names})")
    best = max(shadows, key=lambda sh: sh["vs_control"]["lo"])
    vc = best["vs_control"]
    if not vc["lo"] > margin:
        raise KeyartError(
            f"--require-shadow: not promoted: shadow {best['name']} against the control "
            f"({vc['control_impressions']:,} control impressions): {vc['value']:+.4f} "
            f"[{vc['lo']:+.4f}, {vc['hi']:+.4f}]; its lower bound must exceed "
            f"{margin:+.4f} ({vc['verdict']})")
    return best
