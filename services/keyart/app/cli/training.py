"""Training, offline evaluation and simulation commands (a typer sub-app).

Mount into `keyart` (keyart.app.cli.main) with `register(app)`, which adds the
top-level commands `train`, `evaluate`, `simulate` and `rollback`; or run
standalone: `python -m keyart.app.cli.training --help`. Every command takes `--json`;
bad input prints one line naming file, column and row and exits with status 2.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from keyart.app.cli.support import console, friendly
from keyart.app.cli.support import emit as _emit
from keyart.app.cli.support import load_settings as _settings
from keyart.errors import KeyartError

app = typer.Typer(help="Keyart training jobs, offline evaluation and the closed-loop simulation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _min_minutes(settings, given: Optional[float]) -> float:
    if given is not None:
        return given
    try:
        from keyart.jobs.world.world_model import load_world

        return float(load_world(settings.world_dir).params.quality_minutes)
    except Exception:
        return 15.0


def _catalog_index(settings):  # -> CatalogIndex
    """The catalog in its own feature space: the space a model trained now learns."""
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.core.featurize import CatalogIndex

    return CatalogIndex.build(load_catalog(settings.world_dir))


def _aligned(settings, frame, index):  # -> pd.DataFrame
    """Rows logged under another feature space that serving recorded or a model carries,
    rebuilt in `index.space` (an older catalog's, another model's)."""
    from keyart.adapters.catalog.spaces import known_spaces
    from keyart_training.data.dataset import align_features

    return align_features(frame, index, known_spaces(settings.feature_spaces_dir, settings.models_dir))


def _parse_time(value: Optional[str], default: datetime, what: str, now: datetime) -> datetime:
    """ISO-8601, `now` or an age like 7d, read by the parser `keyart log` uses."""
    from keyart.app.cli.log import parse_when

    return parse_when(value, f"--{what}", now) if value else default


def _load_frame(settings, log_export: Optional[Path], from_store: bool, since: Optional[str],
                until: Optional[str], days: float):
    """The logged frame and a description of its source.

    --since/--until bound decision times: the store query with --from-store, a filter of
    the rows of --log-export (the export is read whole when neither is given).
    """
    from keyart_training.data.dataset import read_log_store, read_logged

    now = datetime.now(timezone.utc)
    if log_export is not None:
        frame = read_logged(log_export)
        if not since and not until:
            return frame, str(log_export)
        import pandas as pd

        end = _parse_time(until, now, "until", now)
        start = _parse_time(since, datetime.min.replace(tzinfo=timezone.utc), "since", now)
        t = pd.to_datetime(frame["decided_at"], utc=True)
        keep = ((t >= start) & (t < end)).to_numpy()
        if not keep.any():
            raise KeyartError(f"{log_export}: no decisions in [{start.isoformat()}, {end.isoformat()}) "
                              f"(--since/--until); the file holds {t.min().isoformat()} .. {t.max().isoformat()}")
        return frame[keep].reset_index(drop=True), f"{log_export} [{start.isoformat()}, {end.isoformat()})"
    if from_store:
        end = _parse_time(until, now, "until", now)
        start = _parse_time(since, end - timedelta(days=days), "since", now)
        if start >= end:
            raise KeyartError(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})")
        return read_log_store(settings, start, end), f"log store [{start.isoformat()}, {end.isoformat()})"
    raise KeyartError("give --log-export PATH, --from-store or --bootstrap")


TIME_HELP = "ISO-8601, 'now', or an age before now like 30m, 24h, 7d"


# ----------------------------------------------------------------------------- train


@app.command("train")
@friendly
def train(
    log_export: Optional[Path] = typer.Option(None, "--log-export", help="Exported log parquet to train on."),
    from_store: bool = typer.Option(False, "--from-store", help="Read the configured decision log store."),
    bootstrap_log: bool = typer.Option(
        False, "--bootstrap", help="Train on a simulated uniform exploration log of the world (first model)."),
    pages: int = typer.Option(4000, help="With --bootstrap: simulated pages."),
    since: Optional[str] = typer.Option(None, help=f"First decision time ({TIME_HELP}); filters --log-export too."),
    until: Optional[str] = typer.Option(None, help=f"End of decision times ({TIME_HELP}; default now)."),
    days: float = typer.Option(14.0, help="With --from-store and no --since: days before --until."),
    holdout_share: float = typer.Option(
        0.2, help="Newest share of the log (by decision time) NOT trained on, left for `keyart evaluate` "
                  "(0: train on everything; evaluation then needs newer decisions)."),
    min_minutes: Optional[float] = typer.Option(None, help="Minutes making a quality play (default: the world's)."),
    attribution_window_hours: Optional[float] = typer.Option(
        None, help="A play counts only if it started within this many hours of the decision."),
    refeaturize: bool = typer.Option(
        False, help="Rebuild features missing from the log (or of another schema) from Feast, point-in-time."),
    ips: bool = typer.Option(False, help="Weight rows by inverse propensity."),
    ips_clip: Optional[float] = typer.Option(None, help="Cap inverse-propensity weights at this value."),
    ensemble_size: int = typer.Option(5, help="Bootstrap members for Thompson sampling (0: none)."),
    threads: int = typer.Option(0, help="LightGBM threads (0: all cores)."),
    ray: bool = typer.Option(False, "--ray", help="Train distributed on Ray (Ray Train LightGBMTrainer)."),
    ray_workers: int = typer.Option(2, help="Ray Train workers."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: local instance)."),
    promote_model: Optional[bool] = typer.Option(
        None, "--promote/--no-promote",
        help="Promote unconditionally (prefer `evaluate --promote-if-better`); default: only a --bootstrap model."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train the quality-play model from the decision log (locally, or on Ray with --ray)."""
    from dataclasses import replace

    from keyart_training.data.dataset import label
    from keyart_training.data.window import holdout_split
    from keyart_training.distributed import RayConfig
    from keyart_training.job import run_training
    from keyart_training.train import TrainConfig

    s = _settings()
    if bootstrap_log:
        from keyart.app.build import simulate_bootstrap_log

        frame, source = simulate_bootstrap_log(s, pages=pages, seed=11), f"simulated uniform exploration, {pages} pages"
        promote_model = promote_model is not False  # the first model has nothing to beat
    else:
        frame, source = _load_frame(s, log_export, from_store, since, until, days)
    if refeaturize:
        from keyart.adapters.catalog.parquet import load_catalog
        from keyart.adapters.feast.online import historical_member_lookup
        from keyart.adapters.feast.repo import resolve_feature_repo
        from keyart.core.featurize import CatalogIndex
        from keyart_training.data.dataset import refeaturize as refeat

        lookup = historical_member_lookup(resolve_feature_repo(s))
        frame = refeat(frame, CatalogIndex.build(load_catalog(s.world_dir)), lookup, progress=True)
    index = _catalog_index(s)
    frame = _aligned(s, frame, index)
    window = None if attribution_window_hours is None else timedelta(hours=attribution_window_hours)
    split = holdout_split(frame, holdout_share, source)
    data = label(split.train, _min_minutes(s, min_minutes), index.space, source=source,
                 attribution_window=window)
    cfg = replace(TrainConfig(), ensemble_size=ensemble_size, num_threads=threads)
    rc = RayConfig(num_workers=ray_workers, address=ray_address) if ray else None
    result = run_training(data, s.models_dir, cfg, ips_weights=ips, promote_after=bool(promote_model), source=source,
                          ips_clip=ips_clip, ray=rc, holdout_from=split.holdout_from,
                          holdout_share=holdout_share, holdout_rows=int(len(split.holdout)),
                          catalog_lineages=index.catalog.lineages())
    meta = json.loads((result.path / "meta.json").read_text())
    out = {"version": result.version, "path": str(result.path), "metrics": result.metrics,
           "promoted": result.promoted, "rows": int(len(data.y)), "training_window": meta["training_window"]}
    m = result.metrics
    if m.get("beats_non_contextual") is False:
        # The guard of early stopping: never hand over a model that learned less than a per-image rate silently.
        out["warning"] = (f"validation log-loss {m['valid_logloss']:.5f} is not below the non-contextual "
                          f"bandit's {m['valid_logloss_non_contextual']:.5f}: this model learned less than a "
                          f"per-image take rate; collect more exploration before promoting it")
        typer.echo(f"warning: {out['warning']}", err=True)

    def human(r: dict[str, Any]) -> None:
        w = r["training_window"] or {}
        console.print(f"model {r['version']} trained on {r['rows']} rows decided {w.get('decided_from')} .. "
                      f"{w.get('decided_until')} (valid AUC {r['metrics']['valid_auc']:.3f}); "
                      f"promoted: {r['promoted']}")
        m = r["metrics"]
        if "valid_ece" in m:
            console.print(f"heads: {m.get('heads')}; validation log-loss {m['valid_logloss']:.5f} (base rate "
                          f"{m['valid_logloss_base_rate']:.5f}, non-contextual "
                          f"{m.get('valid_logloss_non_contextual', float('nan')):.5f}); calibration error "
                          f"{m['valid_ece']:.4f}")
        if w.get("holdout_from"):
            console.print(f"held out {w['holdout_rows']} newer rows (from {w['holdout_from']}): "
                          f"`keyart evaluate` on the same log scores exactly those")

    _emit(out, as_json, human)


# ----------------------------------------------------------------------------- evaluate


def _newest_other(models_dir: Path, current: Optional[str]) -> Optional[str]:
    versions = sorted(p.parent.name for p in models_dir.glob("*/meta.json"))
    others = [v for v in versions if v != current]
    return others[-1] if others else None


@app.command("evaluate")
@friendly
def evaluate(
    log_export: Optional[Path] = typer.Option(None, "--log-export", help="Exported log parquet to evaluate on."),
    from_store: bool = typer.Option(False, "--from-store", help="Read the configured decision log store."),
    since: Optional[str] = typer.Option(None, help=f"First decision time ({TIME_HELP}); filters --log-export too."),
    until: Optional[str] = typer.Option(None, help=f"End of decision times ({TIME_HELP}; default now)."),
    days: float = typer.Option(14.0, help="With --from-store and no --since: days before --until."),
    bandit: Optional[Path] = typer.Option(
        None, "--bandit", help="Generic logged bandit parquet (schema: keyart_training.ope.generic)."),
    by: str = typer.Option("", help="With --bandit: comma-separated breakdown columns."),
    candidate: Optional[str] = typer.Option(None, help="Candidate version (default: newest non-current)."),
    current: Optional[str] = typer.Option(None, help="Serving version (default: models/CURRENT)."),
    min_minutes: Optional[float] = typer.Option(None, help="Minutes making a quality play (default: the world's)."),
    attribution_window_hours: Optional[float] = typer.Option(None, help="Attribution window in hours."),
    fit_share: Optional[float] = typer.Option(
        None, help="Without models: oldest share of the log fitting the non-contextual bandit and DR reward model "
                   "(default 0.5; with models the split is their training window); estimates use the rest. With "
                   "--bandit: default cross-fitting, or the oldest share (by a timestamp column, else file order)."),
    allow_in_sample: bool = typer.Option(
        False, "--allow-in-sample", help="Score models even on decisions within their training window (when no "
                                         "later ones exist); every output is then marked in-sample and the "
                                         "promotion gate refuses it."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for the intervals."),
    confidence: float = typer.Option(0.95, help="Interval coverage."),
    clip: Optional[float] = typer.Option(None, help="Cap importance weights (biased, lower variance)."),
    reward_model: str = typer.Option("lightgbm", help="DR reward model: lightgbm | self."),
    feast_actors: bool = typer.Option(
        False, help="Look member actor affinities up in Feast when the log does not carry them."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the HTML report next to the candidate."),
    out: Optional[Path] = typer.Option(None, help="Report directory (default models/<candidate>/evaluation)."),
    promote_if_better: bool = typer.Option(False, "--promote-if-better",
                                           help="Promote the candidate if it passes the gate."),
    min_lift: float = typer.Option(0.0, help="Gate: lower CI bound of the lift must exceed this."),
    gate_estimator: str = typer.Option("dr", help="Gate estimator: replay | ips | snips | dr | sndr | switch_dr | dm."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Estimate the take fraction of random, non-contextual, current and candidate policies."""
    from keyart_training.ope.evaluate import EvalConfig

    if reward_model not in ("lightgbm", "self"):
        raise KeyartError(f"--reward-model: {reward_model!r} is not lightgbm or self")
    s = _settings()
    window_h = attribution_window_hours
    cfg = EvalConfig(min_minutes=_min_minutes(s, min_minutes), attribution_window_hours=window_h,
                     fit_share=0.5 if fit_share is None else fit_share, bootstrap=bootstrap,
                     confidence=confidence, clip=clip, reward_model=reward_model, allow_in_sample=allow_in_sample,
                     served_policy=s.policy, epsilon=s.epsilon, softmax_temperature=s.softmax_temperature)
    if bandit is not None:
        from keyart_training.ope.generic import evaluate_bandit, read_bandit

        # Generic logs: baselines cross-fitted by default; --fit-share fits them on the oldest rows.
        if reward_model != "lightgbm":
            raise KeyartError("--reward-model self needs a Keyart model; with --bandit give a reward_hat column, "
                              "or features for the LightGBM reward model")

        result = evaluate_bandit(read_bandit(bandit), cfg, by=tuple(c for c in by.split(",") if c),
                                 source=str(bandit), fit_share=fit_share)
        if report and out is not None:
            from keyart_training.ope.report import write_report

            result["report"] = str(write_report(result, out))
        _emit(result, as_json, _print_eval)
        return

    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.core.featurize import CatalogIndex
    from keyart.core.model import current_version, load_model
    from keyart_training.ope.evaluate import contrasting_profiles, evaluate_log

    frame, source = _load_frame(s, log_export, from_store, since, until, days)
    index = CatalogIndex.build(load_catalog(s.world_dir))
    frame = _aligned(s, frame, index)
    cur = current or current_version(s.models_dir)
    cand = candidate or _newest_other(s.models_dir, cur)
    models = {}
    if cur:
        models["current"] = load_model(s.models_dir / cur)
    if cand:
        models["candidate"] = load_model(s.models_dir / cand)
    lookup = None
    if feast_actors:
        from keyart.adapters.feast.online import historical_member_lookup
        from keyart.adapters.feast.repo import resolve_feature_repo

        lookup = historical_member_lookup(resolve_feature_repo(s))
    result = evaluate_log(frame, index, models, cfg, lookup=lookup, source=source)
    if promote_if_better and not cand:
        raise KeyartError("--promote-if-better: no candidate model")
    if cand:
        from keyart_training.promotion import PromotionError
        from keyart_training.promotion import promote_if_better as gate

        # The gate's verdict is computed (dry run without --promote-if-better) before the
        # report, so the report leads with the decision its numbers support.
        try:
            verdict = gate(s.models_dir, cand, cur, result, min_lift=min_lift, estimator=gate_estimator,
                           dry_run=not promote_if_better).as_dict()
        except PromotionError as exc:
            if promote_if_better:
                raise
            verdict = {"promoted": False, "candidate": cand, "current": cur, "estimator": gate_estimator,
                       "refused": True, "reason": str(exc)}
        verdict["would_promote"] = bool(verdict.get("promoted") or (
            not verdict.get("refused") and verdict.get("lo", float("-inf")) > min_lift))
        result["decision"] = verdict
        if promote_if_better:
            result["gate"] = verdict
    if report and models:
        from keyart_training.ope.report import write_report

        target = models.get("candidate") or models["current"]
        profiles = contrasting_profiles(frame, index, target)
        result["report"] = str(write_report(result, out or (s.models_dir / target.version / "evaluation"), profiles))
    _emit(result, as_json, _print_eval)


def _print_eval(r: dict[str, Any]) -> None:
    from rich.table import Table

    sample = r.get("sample") or {}
    scope = ""
    if sample:
        scope = (f", {sample.get('members')} members, decided {sample.get('decided_from')} .. "
                 f"{sample.get('decided_until')}, {'IN-SAMPLE' if r.get('in_sample') else 'out of sample'}")
    t = Table(title=f"take fraction ({r.get('rows')} rows, {r.get('uniform_rows')} uniform{scope})")
    ests = sorted({e for p in r["policies"].values() for e in p})
    t.add_column("policy")
    for e in ests:
        t.add_column(e)
    for pol, est in r["policies"].items():
        t.add_row(pol, *[f"{est[e]['value']:.4f} [{est[e]['lo']:.4f}, {est[e]['hi']:.4f}]" if e in est else "-"
                         for e in ests])
    Console().print(t)
    for note in r.get("notes", []):
        console.print(f"note: {note}")
    if "report" in r:
        console.print(f"report: {r['report']}")
    if "gate" in r:
        console.print(f"gate: {'PROMOTED' if r['gate']['promoted'] else 'refused'}: {r['gate']['reason']}")


# ----------------------------------------------------------------------------- simulate


@app.command("simulate")
@friendly
def simulate(
    rounds: int = typer.Option(3, help="Train-and-serve rounds after the uniform round."),
    pages_first: int = typer.Option(3000, help="Pages of the uniform exploration round."),
    pages_per_round: int = typer.Option(2000, help="Pages served per intermediate round."),
    pages_last: int = typer.Option(4000, help="Pages of the last round (the evaluation log)."),
    epsilon: float = typer.Option(0.1, help="Epsilon of the served epsilon-greedy policy."),
    uniform_share: float = typer.Option(0.3, help="Share of members explored uniformly (replay slice)."),
    seed: int = typer.Option(11, help="Random seed."),
    feast: bool = typer.Option(False, help="Member features from Feast's offline store (slow) instead of "
                                           "the same point-in-time join on its parquet sources."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Closed loop on the synthetic world: true vs replay take fraction per policy."""
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.core.featurize import CatalogIndex
    from keyart.jobs.world.world_model import load_world
    from keyart_training.closed_loop import LoopConfig, closed_loop

    s = _settings()
    if not (s.world_dir / "world.json").is_file():
        from keyart.app.build import build_world_and_features

        console.print(f"no world in {s.world_dir}: building the default synthetic world first")
        build_world_and_features(s)
    if rounds < 1:
        raise KeyartError("--rounds: must be at least 1")
    world = load_world(s.world_dir)
    index = CatalogIndex.build(load_catalog(s.world_dir))
    if feast:
        from keyart.adapters.feast.online import historical_member_lookup
        from keyart.adapters.feast.repo import resolve_feature_repo

        lookup = historical_member_lookup(resolve_feature_repo(s))
    else:
        from keyart_training.data.lookup import parquet_lookup

        lookup = parquet_lookup(s.world_dir)
    cfg = LoopConfig(rounds=rounds, pages_first=pages_first, pages_per_round=pages_per_round,
                     pages_last=pages_last, epsilon=epsilon, uniform_share=uniform_share, seed=seed)
    result = closed_loop(world, index, lookup, cfg, progress=not as_json, say=lambda m: console.print(m))
    _emit(result, as_json, _print_sim)


def _print_sim(r: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"closed loop: last round, {r['eval_rows']} decisions ({r['eval_uniform_rows']} uniform); "
                    f"95% intervals resample members; ESS / largest weight below each estimate")
    for c in ("policy", "TRUE", "replay", "IPS", "SNIPS", "DR"):
        t.add_column(c)

    def cell(row: dict[str, Any], est: str) -> str:
        if est not in row:
            return "-"
        return (f"{row[est]:.4f} [{row[est + '_lo']:.4f}, {row[est + '_hi']:.4f}]\n"
                f"ESS {row.get(est + '_ess', float('nan')):.0f} / w<={row.get(est + '_max_weight', float('nan')):.0f}")

    for row in r["table"]:
        t.add_row(row["policy"], f"{row['truth']:.4f}\n(slice {row['truth_uniform_slice']:.4f})",
                  *[cell(row, e) for e in ("replay", "ips", "snips", "dr")])
    Console().print(t)
    console.print(f"ordered random < non-contextual < contextual: truth {r['ordered_truth']}, "
                  f"replay {r['ordered_replay']} (replay estimates the truth on the uniform slice)")


# ----------------------------------------------------------------------------- rollback


@app.command("rollback")
@friendly
def rollback_cmd(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Serve the previously promoted model again (running replicas swap within seconds)."""
    from keyart_training.promotion import rollback

    s = _settings()
    version = rollback(s.models_dir)
    _emit({"current": version}, as_json, lambda r: console.print(f"rolled back to {r['current']}"))


def register(root: typer.Typer) -> None:
    """Add this app's commands to the `keyart` CLI as top-level commands."""
    root.command("evaluate")(evaluate)
    root.command("simulate")(simulate)
    root.command("train")(train)
    root.command("rollback")(rollback_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
