"""The decision-quality harness (`make bench-quality`) end to end on one tiny world.

Runs `python -m quality.run` as `make bench-quality` does (PYTHONPATH=bench), through
the real import -> features -> serve-bare over gRPC -> export -> train path, with
3,000 logged and 300 held-out decisions, and checks the JSON it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICIES = ("keyart_greedy", "keyart_default", "keyart_thompson", "keyart_epsilon_greedy",
            "non_contextual", "lightgbm", "logistic_regression", "vw_cb_adf")


def test_quality_harness_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYART_")}
    env["PYTHONPATH"] = str(REPO / "bench")
    proc = subprocess.run(
        [sys.executable, "-m", "quality.run", "--worlds", "small_screens", "--scale", "tiny",
         "--decisions", "3000", "--heldout", "300", "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["config"]["decisions"] == 3000 and result["git"]["commit"]
    world = result["worlds"]["small_screens"]
    assert world["log"]["decisions"] == world["log"]["exported_impressions"] == 3000
    assert world["log"]["policies"] == {"uniform": 3000} and world["log"]["uniform_propensity"]
    assert world["log"]["fallbacks"] == 0
    assert world["heldout_decisions"] == 300
    values = world["values"]
    oracle = values["oracle"]
    assert 0.0 <= values["random"] <= oracle and 0.0 <= values["non_contextual"] <= oracle
    assert set(POLICIES) <= set(world["policies"])
    for name in POLICIES:
        e = world["policies"][name]
        assert {"value", "closure", "share_of_oracle"} <= set(e), name
        assert 0.0 <= e["value"] <= oracle + 1e-9, (name, e["value"], oracle)
        lo, hi = e["closure_ci90"]  # paired bootstrap over the held-out decisions
        assert lo <= hi, (name, e)
    assert world["policies"]["non_contextual"]["closure_ci90"] == [0.0, 0.0]
    checks = world["checks"]
    assert checks["best_peer"] in ("lightgbm", "logistic_regression", "vw_cb_adf")
    lo, hi = checks["greedy_minus_best_peer_closure_ci90"]
    assert lo <= hi
    assert 0.0 <= world["stability"]["forced_identical_share"] <= world["stability"]["repeat_share"] <= 1.0
    assert world["keyart_model"]["version"]
    assert world["world"]["clickbait_images"] > 0
    assert "small_screens" in proc.stdout and "keyart_greedy" in proc.stdout  # the printed table
