"""Reading ``manifest.json`` of a world directory to import (optional file).

This module exists because the manifest is JSON, not a table: its keys (``format``,
``now``, ``history_days``, ``quality_minutes``, ``image_attributes``, ``vocabularies``,
``tone_genre``) are checked one by one, each problem reported as an ``Issue`` of
``manifest.json`` naming the key as its column (dotted for an entry of an object, e.g.
``vocabularies.country`` with the list index as its row). Whether a ``tone_genre``
genre is a genre of titles.parquet is checked with the files
(keyart.jobs.world.import_validate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyart.jobs.world.import_issues import IssueLog
from keyart.jobs.world.import_schema import (
    ATTRIBUTE_KINDS,
    FORMAT,
    MANIFEST,
    VOCABULARY_KEYS,
    attribute_name_problem,
    label_problem,
    value_problem,
)

_KEYS = ("format", "now", "history_days", "quality_minutes", "image_attributes", "vocabularies", "tone_genre")
_MANIFEST_KEYS = frozenset({*_KEYS, "source"})


@dataclass
class Manifest:
    """The manifest's settings; None where the manifest does not set them."""

    now: datetime | None = None
    history_days: int | None = None
    quality_minutes: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The customer's image attributes: name -> "numeric" | "categorical" (declared order).
    image_attributes: dict[str, str] = field(default_factory=dict)
    # Declared values beyond the observed ones: "country" / "language" -> values.
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Tone -> the genre it conveys.
    tone_genre: dict[str, str] = field(default_factory=dict)


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
        issues.add(MANIFEST, k, None, f"unknown key (expected {', '.join(_KEYS)})")


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


def _object(raw: dict[str, Any], key: str, issues: IssueLog) -> dict[Any, Any]:
    """``raw[key]`` when it is a JSON object ({} when absent or not an object)."""
    v = raw.get(key, {})
    if not isinstance(v, dict):
        issues.add(MANIFEST, key, None, f"must be a JSON object, got {type(v).__name__}")
        return {}
    return v


def _manifest_image_attributes(raw: dict[str, Any], issues: IssueLog) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, kind in _object(raw, "image_attributes", issues).items():
        problem = attribute_name_problem(name)
        if problem is not None:
            issues.add(MANIFEST, "image_attributes", None, problem)
        elif kind not in ATTRIBUTE_KINDS:
            issues.add(MANIFEST, f"image_attributes.{name}", None,
                       f"{kind!r} is not an attribute kind (expected 'numeric' or 'categorical')")
        else:
            out[name] = str(kind)
    return out


def _vocabulary(key: str, values: Any, issues: IssueLog) -> tuple[str, ...] | None:
    column = f"vocabularies.{key}"
    if key not in VOCABULARY_KEYS:
        issues.add(MANIFEST, column, None, f"unknown vocabulary (expected {', '.join(VOCABULARY_KEYS)})")
        return None
    if not isinstance(values, list):
        issues.add(MANIFEST, column, None, f"must be a JSON list of strings, got {type(values).__name__}")
        return None
    good: list[str] = []
    for i, v in enumerate(values):
        problem = value_problem(key, v)
        if problem is not None:
            issues.add(MANIFEST, column, i, problem)
        elif v not in good:
            good.append(v)
    return tuple(good)


def _manifest_vocabularies(raw: dict[str, Any], issues: IssueLog) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for key, values in _object(raw, "vocabularies", issues).items():
        vocab = _vocabulary(str(key), values, issues)
        if vocab is not None:
            out[str(key)] = vocab
    return out


def _manifest_tone_genre(raw: dict[str, Any], issues: IssueLog) -> dict[str, str]:
    out: dict[str, str] = {}
    for tone, genre in _object(raw, "tone_genre", issues).items():
        problem = label_problem(tone)
        if problem is not None:
            issues.add(MANIFEST, "tone_genre", None, f"tone {problem}")
            continue
        problem = label_problem(genre)
        if problem is not None:
            issues.add(MANIFEST, f"tone_genre.{tone}", None, f"genre {problem}")
            continue
        out[tone] = genre
    return out


def read_manifest(src: Path, issues: IssueLog) -> Manifest:
    """The manifest of ``src`` (all fields None when absent); problems go to ``issues``."""
    path = src / MANIFEST
    if not path.is_file():
        return Manifest()
    raw = _load_manifest_json(path, issues)
    if raw is None:
        return Manifest()
    _check_manifest_keys(raw, issues)
    # Arguments are evaluated in order: issues come out in the order of the fields.
    return Manifest(
        now=_manifest_now(raw, issues),
        history_days=_manifest_history_days(raw, issues),
        quality_minutes=_manifest_quality_minutes(raw, issues),
        image_attributes=_manifest_image_attributes(raw, issues),
        vocabularies=_manifest_vocabularies(raw, issues),
        tone_genre=_manifest_tone_genre(raw, issues),
    )


__all__ = ["Manifest", "read_manifest"]
