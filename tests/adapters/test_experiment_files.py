"""Experiment files: every bad one refused with file, field and reason; the store's rules."""

from __future__ import annotations

import pytest

from keyart.adapters.experiments import ExperimentError, ExperimentStore, parse_experiment

GOOD = """experiment: exp-1
control: control
cells:
  - {name: control, share: 0.8}
  - {name: candidate, share: 0.1, model: m-2}
  - {name: explore, share: 0.1, policy: uniform}
shadows:
  - {name: challenger, model: m-3}
"""


def _file(tmp_path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file(tmp_path) -> None:
    exp = parse_experiment(_file(tmp_path, GOOD))
    assert [c.name for c in exp.cells] == ["control", "candidate", "explore"]
    assert exp.cells[0].model == "current" and exp.cells[2].policy == "uniform"
    assert exp.shadows[0].policy == "greedy" and exp.model_versions() == ["m-2", "m-3"]


@pytest.mark.parametrize("change, field, reason", [
    (("share: 0.8}", "share: 0.7}"), "cells", "shares must sum to 1, they sum to 0.9"),
    (("control: control", "control: nobody"), "control", "'nobody' is not one of the cells"),
    (("policy: uniform}", "policy: random}"), "cells.2.policy", "Input should be"),
    (("share: 0.8}", "share: -0.8}"), "cells.0.share", "greater than 0"),
    (("{name: challenger, model: m-3}", "{name: challenger, model: current}"), "shadows.0.model",
     "a shadow names a model version"),
    (("{name: candidate,", "{name: control,"), "cells", "names must be unique"),
    (("experiment: exp-1", "experiment: 'exp 1'"), "experiment", "should match pattern"),
    (("  - {name: explore, share: 0.1, policy: uniform}", "  - {name: explore, share: 0.1, colour: red}"),
     "cells.2.colour", "Extra inputs are not permitted"),
])
def test_bad_files_name_file_field_and_reason(tmp_path, change, field, reason) -> None:
    path = _file(tmp_path, GOOD.replace(*change))
    with pytest.raises(ExperimentError) as err:
        parse_experiment(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message
    assert f"{path}: {field}:" in message


def test_unreadable_and_malformed(tmp_path) -> None:
    with pytest.raises(ExperimentError, match="cannot read"):
        parse_experiment(tmp_path / "missing.yaml")
    with pytest.raises(ExperimentError, match="not valid YAML"):
        parse_experiment(_file(tmp_path, "cells: [unclosed"))
    with pytest.raises(ExperimentError, match="not valid JSON"):
        parse_experiment(_file(tmp_path, "{", "exp.json"))
    with pytest.raises(ExperimentError, match="expected a mapping"):
        parse_experiment(_file(tmp_path, "- a list"))


def test_start_change_stop(tmp_path) -> None:
    store = ExperimentStore(tmp_path / "experiments")
    assert store.active() is None and store.list() == []
    exp = parse_experiment(_file(tmp_path, GOOD))
    assert store.start(exp).revision == 1
    changed = parse_experiment(_file(tmp_path, GOOD.replace("model: m-3", "model: m-4")))
    assert store.start(changed).revision == 2 and store.active().shadows[0].model == "m-4"
    other = parse_experiment(_file(tmp_path, GOOD.replace("experiment: exp-1", "experiment: exp-2")))
    with pytest.raises(ExperimentError, match="'exp-1' is running: stop it first"):
        store.start(other)
    moved = parse_experiment(_file(tmp_path, GOOD.replace("share: 0.8}", "share: 0.7}").replace(
        "share: 0.1, model", "share: 0.2, model")))
    with pytest.raises(ExperimentError, match="members would switch cell"):
        store.start(moved)
    assert store.active().revision == 2  # refused changes leave the running experiment as it was
    store.stop("exp-1")
    assert store.active() is None and [r["status"] for r in store.list()] == ["stopped"]
    with pytest.raises(ExperimentError, match="was stopped"):
        store.start(exp)
    with pytest.raises(ExperimentError, match="not running"):
        store.stop("exp-1")
    assert store.start(other).experiment_id == "exp-2"
