"""Experiment files and the running experiment, on disk.

An experiment is declared in a YAML or JSON file (`keyart experiments start FILE`):

    experiment: ranker-2026-12          # id: letters, digits, . _ -
    control: control                    # the cell the others are compared with
    cells:                              # shares sum to 1
      - {name: control, share: 0.8}                      # the promoted model, serving policy
      - {name: candidate, share: 0.1, model: m-2026...}  # a given model version
      - {name: explore, share: 0.1, policy: uniform}     # another policy
    shadows:                            # scored on every page of the experiment, never shown
      - {name: challenger, model: m-2026..., policy: greedy, share: 0.25}  # share: of the pages

State lives in `settings.experiments_dir`: `<id>.json` per experiment (its definition,
status, start and stop times, revision) and `ACTIVE` naming the running one, which every
serving replica watches. One experiment runs at a time. While it runs it may change
(models, policies, shadows), but not its cells' names and shares: members would switch
cell. A stopped experiment is not restarted: its id names one assignment of members.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keyart.core.experiment import CURRENT_MODEL, Cell, Experiment, Shadow
from keyart.errors import KeyartError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PolicyName = Literal["epsilon_greedy", "softmax", "thompson", "greedy", "uniform"]
ACTIVE = "ACTIVE"


class ExperimentError(KeyartError):
    """A refused experiment file or command: names the file, the field and the reason."""


class _CellFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    share: float = Field(gt=0.0, le=1.0)
    model: str = Field(CURRENT_MODEL, pattern=NAME_PATTERN)
    policy: Literal["", "epsilon_greedy", "softmax", "thompson", "greedy", "uniform"] = ""


class _ShadowFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(pattern=NAME_PATTERN)
    policy: PolicyName = "greedy"
    share: float = Field(1.0, gt=0.0, le=1.0)  # of the experiment's pages it scores

    @field_validator("model")
    @classmethod
    def _a_version(cls, value: str) -> str:
        if value == CURRENT_MODEL:
            raise ValueError("a shadow names a model version: the current model already serves")
        return value


class _ExperimentFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str = Field(pattern=NAME_PATTERN)
    control: str
    cells: list[_CellFile] = Field(min_length=1)
    shadows: list[_ShadowFile] = []

    @model_validator(mode="after")
    def _consistent(self) -> _ExperimentFile:
        names = [c.name for c in self.cells]
        if len(set(names)) != len(names):
            raise ValueError(f"cells: names must be unique, got {names}")
        if self.control not in names:
            raise ValueError(f"control: {self.control!r} is not one of the cells {names}")
        total = sum(c.share for c in self.cells)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"cells: shares must sum to 1, they sum to {total:g}")
        shadows = [s.name for s in self.shadows]
        if len(set(shadows)) != len(shadows):
            raise ValueError(f"shadows: names must be unique, got {shadows}")
        return self


def _problem(error: Any) -> str:
    """`field.path: reason` (checks across fields name their field in the reason)."""
    reason = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {reason}" if where else reason


def parse_experiment(path: Path) -> Experiment:
    """The experiment a file declares, or ExperimentError naming file, field and reason."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"{path}: cannot read: {exc}") from None
    try:
        raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ExperimentError(f"{path}: not valid {'JSON' if Path(path).suffix == '.json' else 'YAML'}: "
                              f"{exc}") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: expected a mapping with experiment, control and cells")
    try:
        spec = _ExperimentFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors(include_url=False))
        raise ExperimentError(f"{path}: {problems}") from None
    return Experiment(
        experiment_id=spec.experiment,
        control=spec.control,
        cells=tuple(Cell(c.name, c.share, c.model, c.policy) for c in spec.cells),
        shadows=tuple(Shadow(s.name, s.model, s.policy, s.share) for s in spec.shadows),
    )


def experiment_to_dict(exp: Experiment) -> dict[str, Any]:
    return {
        "experiment": exp.experiment_id, "control": exp.control, "revision": exp.revision,
        "cells": [{"name": c.name, "share": c.share, "model": c.model, "policy": c.policy} for c in exp.cells],
        "shadows": [{"name": s.name, "model": s.model, "policy": s.policy, "share": s.share}
                    for s in exp.shadows],
    }


def experiment_from_dict(body: dict[str, Any]) -> Experiment:
    return Experiment(
        experiment_id=body["experiment"], control=body["control"], revision=int(body.get("revision", 1)),
        cells=tuple(Cell(c["name"], float(c["share"]), c["model"], c["policy"]) for c in body["cells"]),
        shadows=tuple(Shadow(s["name"], s["model"], s["policy"], float(s.get("share", 1.0)))
                      for s in body.get("shadows", ())),
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


class ExperimentStore:
    """The experiments of one data dir (`settings.experiments_dir`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _record_path(self, experiment_id: str) -> Path:
        return self.root / f"{experiment_id}.json"

    def record(self, experiment_id: str) -> dict[str, Any] | None:
        path = self._record_path(experiment_id)
        if not path.exists():
            return None
        return dict(json.loads(path.read_text("utf-8")))

    def active_id(self) -> str | None:
        path = self.root / ACTIVE
        try:
            text = path.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ExperimentError(f"{path}: cannot read: {exc}") from None
        return text or None

    def active(self) -> Experiment | None:
        """The running experiment (None: none), as every replica serves it."""
        experiment_id = self.active_id()
        if experiment_id is None:
            return None
        record = self.record(experiment_id)
        if record is None:
            raise ExperimentError(f"{self.root / ACTIVE}: names {experiment_id!r}, which has no record")
        return experiment_from_dict(record["definition"])

    def start(self, exp: Experiment, source: str = "", now: datetime | None = None) -> Experiment:
        """Run `exp`, or change the running experiment of the same id. Returns what now runs.

        Refused (ExperimentError, nothing changed): another experiment runs; the change
        would move members between cells; the id names a stopped experiment.
        """
        now = now or datetime.now(UTC)
        running = self.active_id()
        if running is not None and running != exp.experiment_id:
            raise ExperimentError(f"experiment {running!r} is running: stop it first "
                                  f"(keyart experiments stop {running})")
        record = self.record(exp.experiment_id)
        if record is not None and record["status"] != "running":
            raise ExperimentError(f"{source or exp.experiment_id}: experiment: {exp.experiment_id!r} was stopped "
                                  "on " + str(record.get("stopped_at")) + "; start it under a new id")
        if record is not None:
            before = experiment_from_dict(record["definition"])
            if before.assignment_key() != exp.assignment_key():
                raise ExperimentError(
                    f"{source or exp.experiment_id}: cells: names and shares cannot change while "
                    f"{exp.experiment_id!r} runs (members would switch cell); stop it and start a new id")
            exp = Experiment(exp.experiment_id, exp.cells, exp.control, exp.shadows, before.revision + 1)
            record.update(definition=experiment_to_dict(exp), changed_at=now.isoformat(), source=source)
        else:
            record = {"definition": experiment_to_dict(exp), "status": "running", "started_at": now.isoformat(),
                      "stopped_at": None, "source": source}
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._record_path(exp.experiment_id), json.dumps(record, indent=1))
        _write_atomic(self.root / ACTIVE, exp.experiment_id + "\n")
        return exp

    def stop(self, experiment_id: str, now: datetime | None = None) -> dict[str, Any]:
        record = self.record(experiment_id)
        if record is None:
            raise ExperimentError(f"no experiment {experiment_id!r} in {self.root}")
        if record["status"] != "running":
            raise ExperimentError(f"experiment {experiment_id!r} is not running (stopped {record['stopped_at']})")
        record.update(status="stopped", stopped_at=(now or datetime.now(UTC)).isoformat())
        if self.active_id() == experiment_id:
            (self.root / ACTIVE).unlink()
        _write_atomic(self._record_path(experiment_id), json.dumps(record, indent=1))
        return record

    def list(self) -> list[dict[str, Any]]:
        """Every experiment's record, oldest first."""
        if not self.root.exists():
            return []
        records = [json.loads(p.read_text("utf-8")) for p in self.root.glob("*.json")]
        return sorted(records, key=lambda r: r["started_at"])
