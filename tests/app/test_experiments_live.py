"""An online experiment on a running server (the bare grpc.aio one, in process): started,
changed and stopped with `keyart experiments` while it serves, logged, and reported.

Two cells (the promoted model and a candidate model) and a shadow of the candidate, as
README's "Online experiments" runs them on `make run`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from bare_server import BareServer, page
from platform_data import build_platform
from typer.testing import CliRunner

from keyart.v1 import ranking_pb2 as pb

pytestmark = pytest.mark.integration


def keyart(env: dict[str, str], *args: str, code: int = 0):
    from keyart.app.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"keyart {' '.join(args)}: {result.output}"
    return result


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    settings = build_platform(root / "var")
    env = {"KEYART_DATA_DIR": str(settings.data_dir), "KEYART_FEATURE_REPO_DIR": str(settings.feature_repo_dir),
           "KEYART_COMPILED_TREES": "false"}
    current = (settings.models_dir / "CURRENT").read_text().strip()
    trained = json.loads(keyart(env, "train", "--bootstrap", "--pages", "400", "--no-promote", "--json").stdout)
    candidate = trained["version"]
    assert candidate != current and (settings.models_dir / "CURRENT").read_text().strip() == current
    server = BareServer(settings)
    yield env, settings, server, current, candidate, root
    server.close()


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _serve(server, settings, members: list[str], rng: np.random.Generator) -> list[pb.RankArtworkResponse]:
    from keyart.adapters.catalog.parquet import load_catalog

    titles = sorted(load_catalog(settings.world_dir).titles)
    when = datetime.now(UTC)
    replies = []
    for m in members:
        reply = server.stub.RankArtwork(page(m, list(rng.choice(titles, 8, replace=False)), when), timeout=30)
        outcomes = []
        for s in reply.selections:
            if rng.random() < 0.3:
                o = pb.Outcome(decision_id=s.decision_id, member_id=m, title_id=s.title_id, image_id=s.image_id,
                               kind=pb.OUTCOME_KIND_PLAYBACK_PROGRESS, minutes_played=float(rng.choice([3.0, 40.0])))
                o.event_time.FromDatetime(when + timedelta(minutes=1))
                outcomes.append(o)
        if outcomes:
            server.stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=30)
        replies.append(reply)
    return replies


def test_two_cells_and_a_shadow_on_a_running_server(served) -> None:
    env, settings, server, current, candidate, root = served
    members = [f"m{k:04d}" for k in range(120)]
    rng = np.random.default_rng(5)
    spec = root / "exp.yaml"
    spec.write_text(f"""experiment: live-1
control: control
cells:
  - {{name: control, share: 0.5}}
  - {{name: candidate, share: 0.5, model: {candidate}}}
shadows:
  - {{name: challenger, model: {candidate}, policy: greedy}}
""")
    keyart(env, "experiments", "start", str(spec))
    _wait(lambda: server.runtime.page.experiment is not None, "the experiment to be served")
    replies = _serve(server, settings, members, rng)
    by_cell = {r.model_version for r in replies}
    assert by_cell == {current, candidate}  # each cell served by its model, no restart

    # A bad change is refused with file, field and reason; what runs is untouched.
    bad = root / "bad.yaml"
    bad.write_text(spec.read_text().replace("share: 0.5}", "share: 1.5}", 1))
    out = keyart(env, "experiments", "start", str(bad), code=2).output
    assert f"{bad}: cells.0.share" in " ".join(out.split()) and "less than or equal to 1" in out
    moved = root / "moved.yaml"
    moved.write_text(spec.read_text().replace("share: 0.5}", "share: 0.4}", 1).replace(
        "share: 0.5, model", "share: 0.6, model"))
    refused = keyart(env, "experiments", "start", str(moved), code=2).output
    assert "members would switch cell" in " ".join(refused.split())
    listed = json.loads(keyart(env, "experiments", "list", "--json").stdout)["experiments"]
    assert [(e["status"], e["definition"]["revision"]) for e in listed] == [("running", 1)]

    assert server.runtime.writer.flush(20)
    html = root / "report.html"
    report = json.loads(keyart(env, "experiments", "report", "live-1", "--json", "--html", str(html)).stdout)
    cells = {c["name"]: c for c in report["cells"]}
    assert set(cells) == {"control", "candidate"}
    assert sum(c["impressions"] for c in cells.values()) == 8 * len(members)
    assert all(c["take_fraction"] is not None and c["lo"] <= c["take_fraction"] <= c["hi"] for c in cells.values())
    assert "lift" in cells["candidate"] and cells["candidate"]["lift"]["verdict"]
    [shadow] = report["shadows"]
    assert shadow["name"] == "challenger" and shadow["model_version"] == candidate
    assert shadow["decisions"] == 8 * len(members) and shadow["ips"] is not None and shadow["ess"] > 0
    # The shadow is the candidate's greedy choice: where the candidate cell served greedily, they agree.
    assert 0 < shadow["agreement"] < 1
    assert "challenger" in html.read_text() and "candidate" in html.read_text()

    # Promotion that requires live evidence: 960 decisions are not enough to show a lift.
    out = " ".join(keyart(env, "models", "promote", candidate, "--require-shadow", "live-1", code=2).output.split())
    assert "not promoted: shadow challenger" in out
    assert (settings.models_dir / "CURRENT").read_text().strip() == current

    keyart(env, "experiments", "stop", "live-1")
    _wait(lambda: server.runtime.page.experiment is None, "the experiment to stop")
    after = _serve(server, settings, members[:10], rng)
    assert {r.model_version for r in after} == {current}
    assert "was stopped" in " ".join(keyart(env, "experiments", "start", str(spec), code=2).output.split())
