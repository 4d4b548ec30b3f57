"""Reading ``manifest.json`` of a world directory to import (optional file).

This module exists because the manifest is JSON, not a table: its keys (``format``,
``now``, ``history_days``, ``quality_minutes``) are checked one by one, each problem
reported as an ``Issue`` of ``manifest.json`` naming the key as its column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyart.jobs.world.import_issues import IssueLog
from keyart.jobs.world.import_schema import FORMAT, MANIFEST

_MANIFEST_KEYS = frozenset({"format", "now", "history_days", "quality_minutes", "source"})


@dataclass
class Manifest:
    """The manifest's settings; None where the manifest does not set them."""

    now: datetime | None = None
    history_days: int | None = None
    quality_minutes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _load_manifest_json(path: Path, issues: IssueLog) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
    except Exception as exc:  # noqa: BLE001
        issues.add(MANIFEST, None, None, f"cannot read: {exc}")
        return None
    return raw


def _check_manifest_keys(raw: dict[str, Any], issues: IssueLog) -> None:
    fmt = raw.get("format", FORMAT)
    if fmt != FORMAT:
        issues.add(MANIFEST, "format", None, f"{fmt!r} is not supported (expected {FORMAT!r})")
    for k in sorted(set(raw) - _MANIFEST_KEYS):
        issues.add(MANIFEST, k, None, "unknown key (expected format, now, history_days, quality_minutes)")


def _manifest_now(raw: dict[str, Any], issues: IssueLog) -> datetime | None:
    if "now" not in raw:
        return None
    try:
        now = datetime.fromisoformat(str(raw["now"]))
    except ValueError:
        issues.add(MANIFEST, "now", None, f"{raw['now']!r} is not an ISO-8601 timestamp")
        return None
    if now.tzinfo is None:
        issues.add(MANIFEST, "now", None, f"{raw['now']!r} must be timezone-aware (e.g. +00:00)")
        return None
    return now.astimezone(UTC)


def _manifest_history_days(raw: dict[str, Any], issues: IssueLog) -> int | None:
    if "history_days" not in raw:
        return None
    v = raw["history_days"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 14:
        issues.add(MANIFEST, "history_days", None, f"{v!r} must be an integer >= 14")
        return None
    return v


def _manifest_quality_minutes(raw: dict[str, Any], issues: IssueLog) -> float | None:
    if "quality_minutes" not in raw:
        return None
    v = raw["quality_minutes"]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
        issues.add(MANIFEST, "quality_minutes", None, f"{v!r} must be a number > 0")
        return None
    return float(v)


def read_manifest(src: Path, issues: IssueLog) -> Manifest:
    """The manifest of ``src`` (all fields None when absent); problems go to ``issues``."""
    path = src / MANIFEST
    if not path.is_file():
        return Manifest()
    raw = _load_manifest_json(path, issues)
    if raw is None:
        return Manifest()
    _check_manifest_keys(raw, issues)
    # Arguments are evaluated in order: issues come out as now, history_days, quality_minutes.
    return Manifest(
        now=_manifest_now(raw, issues),
        history_days=_manifest_history_days(raw, issues),
        quality_minutes=_manifest_quality_minutes(raw, issues),
    )


__all__ = ["Manifest", "read_manifest"]
