"""Coverage check of the offline estimators' intervals on the synthetic world.

Over `runs` independent closed loops (`closed_loop.closed_loop` with seeds seed0,
seed0 + 1, ...; each seed salts the served policy's stable draws, so runs are
independent replications), it counts how often each policy's interval contains the
policy's true take fraction: IPS, SNIPS and DR against the truth on all the last
round's contexts, replay against the truth on its uniformly explored members. The
bar (issue 12): the 95% intervals of IPS, SNIPS and DR cover the truth of every
policy in at least 90% of runs.

    python -m keyart_training.coverage --world var/world --runs 30 --out coverage.jsonl

Each run's table is appended to `--out` as one JSON line as soon as it is done, so an
interrupted check keeps its runs (`--resume` skips seeds already there); the summary
table is printed (and written with `--summary`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

BAR = 0.90
GATED: tuple[str, ...] = ("ips", "snips", "dr")
ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")

# Smaller than `keyart simulate`'s defaults (fewer, shorter training rounds) but with its
# evaluation round: 4000 pages, 30% of members uniform, epsilon 0.1.
DEFAULT_LOOP: dict[str, Any] = {"rounds": 2, "pages_first": 3000, "pages_per_round": 2000, "pages_last": 4000,
                                "max_rounds": 200, "bootstrap": 200}


def covered(row: dict[str, Any], estimator: str) -> bool | None:
    """Whether one policy row's interval holds its estimand's truth (None: no interval)."""
    lo, hi = row.get(f"{estimator}_lo"), row.get(f"{estimator}_hi")
    if lo is None or hi is None or lo != lo or hi != hi:  # missing or NaN
        return None
    truth = row["truth_uniform_slice"] if estimator == "replay" else row["truth"]
    return bool(lo <= truth <= hi)


def coverage_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per policy and estimator: runs, covered runs, coverage share, mean error and width."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for run in runs:
        for row in run["table"]:
            for est in ESTIMATORS:
                hit = covered(row, est)
                if hit is None:
                    continue
                truth = row["truth_uniform_slice"] if est == "replay" else row["truth"]
                cell = table.setdefault(row["policy"], {}).setdefault(
                    est, {"runs": 0, "covered": 0, "sum_error": 0.0, "sum_width": 0.0})
                cell["runs"] += 1
                cell["covered"] += int(hit)
                cell["sum_error"] += float(row[est]) - float(truth)
                cell["sum_width"] += float(row[f"{est}_hi"]) - float(row[f"{est}_lo"])
    out: dict[str, Any] = {"runs": len(runs), "bar": BAR, "gated": list(GATED), "policies": {}}
    passed = bool(runs)
    for policy, per in table.items():
        out["policies"][policy] = {}
        for est, c in per.items():
            share = c["covered"] / c["runs"]
            out["policies"][policy][est] = {"runs": int(c["runs"]), "covered": int(c["covered"]),
                                            "coverage": share, "mean_error": c["sum_error"] / c["runs"],
                                            "mean_width": c["sum_width"] / c["runs"]}
            if est in GATED and share < BAR:
                passed = False
    out["passed"] = passed
    return out


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"coverage over {summary['runs']} runs (bar: {summary['bar']:.0%} for {', '.join(summary['gated'])})",
             f"{'policy':<18}" + "".join(f"{e:>26}" for e in ESTIMATORS)]
    for policy, per in summary["policies"].items():
        cells = []
        for est in ESTIMATORS:
            c = per.get(est)
            cells.append(f"{'-':>26}" if c is None else
                         f"{c['covered']:>3}/{c['runs']:<3} {c['coverage']:5.0%} err {c['mean_error']:+.4f}")
        lines.append(f"{policy:<18}" + "".join(f"{c:>26}" for c in cells))
    lines.append(f"passed: {summary['passed']}")
    return "\n".join(lines)


def run_coverage(world_dir: Path, runs: int, seed0: int, out: Path, loop: dict[str, Any] | None = None,
                 resume: bool = False, say=print) -> dict[str, Any]:
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.core.featurize import CatalogIndex
    from keyart.jobs.world.world_model import load_world
    from keyart_training.closed_loop import LoopConfig, closed_loop
    from keyart_training.data.lookup import parquet_lookup

    world = load_world(world_dir)
    index = CatalogIndex.build(load_catalog(world_dir))
    lookup = parquet_lookup(world_dir)
    base = replace(LoopConfig(), **(loop or DEFAULT_LOOP))
    done: list[dict[str, Any]] = []
    if resume and out.is_file():
        done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    seen = {r["config"]["seed"] for r in done}
    for k in range(runs):
        seed = seed0 + k
        if seed in seen:
            continue
        r = closed_loop(world, index, lookup, replace(base, seed=seed))
        record = {"config": asdict(replace(base, seed=seed)), "table": r["table"], "eval_rows": r["eval_rows"]}
        with open(out, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        done.append(record)
        say(f"run {len(done)}/{runs} (seed {seed}) done")
    return coverage_table(done)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=Path("var/world"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=100, help="seed of the first run")
    ap.add_argument("--out", type=Path, default=Path("coverage.jsonl"), help="one JSON line per run")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    ap.add_argument("--summary", type=Path, default=None, help="write the summary JSON here")
    args = ap.parse_args(argv)
    summary = run_coverage(args.world, args.runs, args.seed, args.out, resume=args.resume)
    print(format_table(summary))
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
