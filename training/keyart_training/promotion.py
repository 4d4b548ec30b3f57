"""Promotion gate and rollback.

`promote_if_better` promotes a candidate only when the offline evaluation shows it
beats the serving model by at least `min_lift` (absolute take fraction) with
confidence: the LOWER end of the paired bootstrap interval of the lift must clear
`min_lift`. It never accepts in-sample evidence: the evaluation must have scored only
decisions after the training window recorded in the meta.json of the candidate and of
the serving model (`check_out_of_sample`). Every promotion made here is appended to
`models/PROMOTIONS.jsonl`, so `rollback` knows the previous version; serving
replicas poll `models/CURRENT` and swap without a restart (keyart.app.runtime).
`keyart models promote VERSION` remains the manual way to point CURRENT anywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from keyart.core.model import CURRENT_POINTER, current_version, promote
from keyart.errors import KeyartError

HISTORY = "PROMOTIONS.jsonl"


class PromotionError(KeyartError):
    """The gate cannot decide (evaluation missing the policies or versions it needs)."""


@dataclass
class GateDecision:
    promoted: bool
    candidate: str
    current: str | None
    estimator: str
    lift: float
    lo: float
    hi: float
    min_lift: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(models_dir: Path, version: str, previous: str | None, reason: str) -> None:
    entry = {"at": datetime.now(timezone.utc).isoformat(), "version": version, "previous": previous,
             "reason": reason}
    with open(models_dir / HISTORY, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def history(models_dir: Path) -> list[dict[str, Any]]:
    path = Path(models_dir) / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_out_of_sample(models_dir: Path, evaluation: dict[str, Any], versions: list[str]) -> None:
    """Refuse (PromotionError) evidence that is, or may be, in-sample for any of `versions`.

    The evaluation must say it is out of sample, and, independently of what it says,
    its first scored decision must be later than the end of every version's training
    window as recorded in models/<version>/meta.json (a model recording no window may
    have been trained on anything, so it is refused).
    """
    from keyart_training.data.window import TrainingWindow, utc

    sample = evaluation.get("sample")
    if evaluation.get("in_sample", True) or not isinstance(sample, dict) or sample.get("in_sample", True):
        names = ", ".join((sample or {}).get("in_sample_models") or []) or "unknown models"
        raise PromotionError(f"refusing to promote on in-sample evidence: the evaluation scored decisions "
                             f"{names} may have been trained on (evaluate on decisions after the training window, "
                             f"without --allow-in-sample)")
    first = sample.get("decided_from")
    if not first:
        raise PromotionError("refusing to promote: the evaluation does not say which decisions it scored")
    for version in versions:
        meta_path = Path(models_dir) / version / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PromotionError(f"{meta_path}: cannot read the training window ({exc})") from None
        window = TrainingWindow.of_meta(meta)
        if window is None:
            raise PromotionError(f"refusing to promote: {meta_path} records no training window, so the "
                                 f"evaluation may be in-sample for {version}")
        if utc(first) <= window.decided_until:
            raise PromotionError(f"refusing to promote on in-sample evidence: the evaluation scored decisions "
                                 f"from {utc(first).isoformat()}, within or before the training window "
                                 f"{window.describe()} of {version}")


def promote_if_better(
    models_dir: Path,
    candidate: str,
    current: str | None,
    evaluation: dict[str, Any],
    min_lift: float = 0.0,
    estimator: str = "dr",
    dry_run: bool = False,
) -> GateDecision:
    """Promote `candidate` iff the lower CI bound of its lift over `current` exceeds `min_lift`.

    In-sample evidence is refused before anything else (`check_out_of_sample`).

    `evaluation` is `evaluate.evaluate_log`'s result with policies "candidate" (and
    "current" when a model serves); with no current model the candidate must beat
    the random policy instead.
    """
    models_dir = Path(models_dir)
    check_out_of_sample(models_dir, evaluation, [v for v in (candidate, current) if v])
    info = evaluation.get("policy_info", {})
    if info.get("candidate", {}).get("version") != candidate:
        raise PromotionError(f"evaluation is of candidate {info.get('candidate', {}).get('version')!r}, "
                             f"not {candidate!r}")
    baseline = "current" if current else "random"
    if current and info.get("current", {}).get("version") != current:
        raise PromotionError(f"evaluation is against {info.get('current', {}).get('version')!r}, "
                             f"not the serving model {current!r}")
    lift = evaluation.get("lifts", {}).get(f"candidate_vs_{baseline}", {}).get(estimator)
    if lift is None:
        raise PromotionError(f"evaluation has no {estimator} lift of candidate over {baseline}")
    ok = lift["lo"] > min_lift
    reason = (f"{estimator} lift over {baseline} {lift['value']:+.4f} [{lift['lo']:+.4f}, {lift['hi']:+.4f}]: "
              f"lower bound {'>' if ok else '<='} min_lift {min_lift:+.4f}")
    if ok and not dry_run:
        promote(models_dir, candidate)
        _record(models_dir, candidate, current, reason)
    return GateDecision(promoted=ok and not dry_run, candidate=candidate, current=current, estimator=estimator,
                        lift=lift["value"], lo=lift["lo"], hi=lift["hi"], min_lift=min_lift, reason=reason)


def previous_version(models_dir: Path) -> str | None:
    """The version served before the current one: from the promotion history, else the
    newest other artifact older than the current one (versions sort by time)."""
    models_dir = Path(models_dir)
    cur = current_version(models_dir)
    for entry in reversed(history(models_dir)):
        if entry["version"] == cur and entry.get("previous"):
            return str(entry["previous"])
    versions = sorted(p.parent.name for p in models_dir.glob("*/meta.json"))
    older = [v for v in versions if cur is None or v < cur]
    return older[-1] if older else None


def rollback(models_dir: Path) -> str:
    """Point CURRENT back at the previous version; returns it."""
    models_dir = Path(models_dir)
    prev = previous_version(models_dir)
    if prev is None:
        raise PromotionError(f"{models_dir / CURRENT_POINTER}: no previous version to roll back to")
    cur = current_version(models_dir)
    promote(models_dir, prev)
    _record(models_dir, prev, cur, "rollback")
    return prev
