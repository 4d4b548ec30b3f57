"""The first week of a new customer (README, "First week of a new customer"), end to end.

On a fresh data dir holding a catalog made here by hand (not the demo world: other
titles, genres, countries, pools of 2 to 6 images, no ground truth): `keyart world
import`, serve with no model (exploring uniformly, propensity 1/k, features logged),
report outcomes, `keyart log export`, `keyart train --log-export`, `keyart evaluate`,
`keyart models promote`, and the served pages then carry the model's version.

Serving runs on the bare grpc.aio server in this process (fast); one more test starts
Ray Serve once with `keyart up --detach` and stops it with `keyart down`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bare_server import BareServer, page
from platform_data import REPO_ROOT, free_port
from typer.testing import CliRunner

from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

pytestmark = pytest.mark.integration

# The customer's own vocabularies: no code constant of Keyart knows "anime", "true-crime",
# "romantic", "intense", New Zealand or Māori.
GENRES = ("documentary", "anime", "comedy", "true-crime", "romance")
TONES = ("documentary", "anime", "comedy", "true-crime", "romantic")
MEMBERS = 48
TITLES = 14
QUALITY_MINUTES = 20.0
TIMINGS: dict[str, float] = {}


def pool_size(t: int) -> int:
    return 2 + t % 5  # 2..6 images: pools of unequal size


def write_catalog(out: Path, now: datetime, seed: int = 4) -> None:
    """A customer's catalog in the import format, written with plain pyarrow.

    It uses open vocabularies (its own genres, tones, expressions, countries and languages),
    leaves out the optional columns (name, default_image_id, contrast, style, palette,
    group_size, tenure_days) and declares two attributes of its own tagger.
    """
    rng = np.random.default_rng(seed)
    titles, images = [], []
    for t in range(TITLES):
        tid = f"doc-{t:03d}"
        cast = [f"voice-{(t + j) % 9}" for j in range(3)]
        ids = [f"{tid}-art{k}" for k in range(pool_size(t))]
        titles.append({"title_id": tid, "genres": [GENRES[t % len(GENRES)]], "cast": cast,
                       "villain_actor": None, "runtime_minutes": 50.0 + t})
        for k, iid in enumerate(ids):
            faces = k % 3
            images.append({
                "image_id": iid, "title_id": tid, "lineage_id": f"{tid}-src{k // 2}", "num_faces": faces,
                "face_area": 0.15 * faces, "expression": ("none", "intense", "joyful")[faces], "villain_shown": False,
                "cast_shown": cast[:faces], "brightness": 0.3 + 0.1 * (k % 4),
                "warmth": -0.4 + 0.2 * (k % 4), "tone": TONES[(t + k) % len(TONES)],
                "text_present": k % 2 == 1, "cv_smile": 0.2 * (k % 5) if k % 4 else None,
                "cv_scene": ("beach", "city", None)[k % 3],
            })
    members = [{"member_id": f"viewer-{m:04d}", "country": ("GB", "NZ", "JP")[m % 3],
                "language": ("en", "mi", "ja")[m % 3], "main_device": ("TV", "MOBILE", "WEB")[m % 3]}
               for m in range(MEMBERS)]
    viewing = [{"member_id": f"viewer-{m:04d}", "title_id": f"doc-{int(rng.integers(TITLES)):03d}",
                "event_timestamp": now - timedelta(days=float(rng.uniform(1, 50))),
                "minutes_watched": float(rng.uniform(5, 60))} for m in range(MEMBERS) for _ in range(8)]
    s, f, i, b, lst = pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.list_(pa.string())
    schemas = {
        "members": [("member_id", s), ("country", s), ("language", s), ("main_device", s)],
        "titles": [("title_id", s), ("genres", lst), ("cast", lst), ("villain_actor", s), ("runtime_minutes", f)],
        "images": [("image_id", s), ("title_id", s), ("lineage_id", s), ("num_faces", i), ("face_area", f),
                   ("expression", s), ("villain_shown", b), ("cast_shown", lst),
                   ("brightness", f), ("warmth", f), ("tone", s), ("text_present", b), ("cv_smile", f),
                   ("cv_scene", s)],
        "viewing": [("member_id", s), ("title_id", s), ("event_timestamp", pa.timestamp("us", tz="UTC")),
                    ("minutes_watched", f)],
    }
    out.mkdir(parents=True)
    for name, rows in (("members", members), ("titles", titles), ("images", images), ("viewing", viewing)):
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(schemas[name])), out / f"{name}.parquet")
    (out / "manifest.json").write_text(json.dumps({
        "format": "keyart-world/1", "now": now.isoformat(), "history_days": 60, "quality_minutes": QUALITY_MINUTES,
        "image_attributes": {"cv_smile": "numeric", "cv_scene": "categorical"},
        "tone_genre": {"romantic": "romance"}}))


def keyart(env: dict[str, str], *args: str, stream: str = "stdout") -> str:
    """Run a `keyart` command in this process; returns its stdout or stderr (asserting success)."""
    from keyart.app.cli.main import app

    started = time.monotonic()
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    TIMINGS[" ".join(args[:2])] = round(time.monotonic() - started, 1)
    assert result.exit_code == 0, f"keyart {' '.join(args)}: {result.output}"
    return str(getattr(result, stream))


@pytest.fixture(scope="module")
def customer(tmp_path_factory):
    """A fresh data dir with the customer's catalog imported and Feast applied, no model."""
    from keyart.app.build import ensure_built
    from keyart.core.model import current_version

    root = tmp_path_factory.mktemp("first-week")
    world_now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    write_catalog(root / "catalog", world_now)
    env = {
        "KEYART_DATA_DIR": str(root / "var"),
        "KEYART_FEATURE_REPO_DIR": str(REPO_ROOT / "features"),
        "KEYART_GRPC_PORT": str(free_port()),
        "KEYART_METRICS_PORT": str(free_port()),
        "KEYART_HTTP_PORT": str(free_port()),
        "KEYART_FEATURE_TIMEOUT_MS": "2000",  # generous budgets: CI machines are shared
        "KEYART_REQUEST_BUDGET_MS": "4000",
    }
    imported = json.loads(keyart(env, "world", "import", str(root / "catalog"), "--json"))
    assert imported["sizes"]["titles"] == TITLES and imported["sizes"]["members"] == MEMBERS
    settings = KeyartSettings(**{k.removeprefix("KEYART_").lower(): v for k, v in env.items()})
    said: list[str] = []
    started = time.monotonic()
    ensure_built(settings, said.append)  # what `keyart up` and `make run` do first
    TIMINGS["ensure_built (features apply)"] = round(time.monotonic() - started, 1)
    assert any("applying and materializing" in m for m in said), said
    assert any(m.startswith("no model yet: exploring uniformly") for m in said), said
    assert current_version(settings.models_dir) is None  # nothing was trained on a simulated log
    yield env, settings
    print("\nfirst week timings (s):", json.dumps(TIMINGS))


def outcomes_for(reply: pb.RankArtworkResponse, member: str, when: datetime, rng: np.random.Generator,
                 take: Callable[[str, str], float]) -> list[pb.Outcome]:
    """What the member did: a play of at least QUALITY_MINUTES with probability take(member, image)."""
    out = []
    for s in reply.selections:
        u = rng.random()
        if u >= take(member, s.image_id) + 0.15:
            continue  # not played
        minutes = 35.0 if u < take(member, s.image_id) else 4.0  # a quality play, or a short one
        for kind, mins, after in ((pb.OUTCOME_KIND_PLAY_STARTED, 0.0, 2), (pb.OUTCOME_KIND_PLAYBACK_PROGRESS,
                                                                           minutes, 2 + minutes)):
            o = pb.Outcome(decision_id=s.decision_id, member_id=member, title_id=s.title_id, image_id=s.image_id,
                           kind=kind, minutes_played=mins)
            o.event_time.FromDatetime(when + timedelta(minutes=after))
            out.append(o)
    return out


class _LoadDuringStop:
    """Pages one after another on a thread, and health every 0.1 s, until 1 s after health
    first says NOT_SERVING (a client or load balancer that honours health) or 30 s."""

    def __init__(self, address: str, titles: list[str]) -> None:
        import threading

        self.address, self.titles = address, titles
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.not_serving_after: float | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub, health = ranking_pb2_grpc.ArtworkRankerStub(channel), health_pb2_grpc.HealthStub(channel)
            seen_at, checked, k = None, 0.0, 0
            while time.monotonic() - self.started < 30 and (seen_at is None or time.monotonic() - seen_at < 1.0):
                if seen_at is None and time.monotonic() - checked > 0.1:
                    checked = time.monotonic()
                    try:
                        status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    except grpc.RpcError as exc:
                        self.failed.append(f"health {exc.code().name}")
                        return
                    if status != health_pb2.HealthCheckResponse.SERVING:
                        seen_at = time.monotonic()
                        self.not_serving_after = round(seen_at - self.started, 2)
                try:
                    reply = stub.RankArtwork(page(f"drain-{k % 7}", self.titles, datetime.now(UTC)), timeout=5)
                    self.acked += [s.decision_id for s in reply.selections]
                except grpc.RpcError as exc:
                    self.failed.append(f"{exc.code().name} at {time.monotonic() - self.started:.2f} s")
                k += 1

    def join(self) -> None:
        self.thread.join(40)


def test_up_detach_serves_the_imported_catalog_until_down(customer, monkeypatch, tmp_path):
    """`keyart up --detach` returns once Ray Serve is SERVING and leaves it running;
    `keyart down` stops it (PID file removed), and says so when nothing runs."""
    import shutil

    from keyart.app import detach
    from keyart.core.model import current_version

    env, settings = customer
    # A copy of the customer's data dir: the drain's load below logs its own pages, which
    # must not join the week of traffic the workflow test trains on.
    own = tmp_path / "var"
    shutil.copytree(settings.data_dir, own)
    env = {**env, "KEYART_DATA_DIR": str(own)}
    settings = settings.model_copy(update={"data_dir": own})
    # HAProxy's own ports too: a `make run` on this machine must not clash (inherited by the server).
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    model = current_version(settings.models_dir)  # None unless the workflow test ran first
    started = time.monotonic()
    try:
        said = keyart(env, "up", "--detach", "--timeout", "420", stream="stderr")
        TIMINGS["up --detach (Ray Serve SERVING)"] = round(time.monotonic() - started, 1)
        assert "READY" in said and ("no model yet: exploring uniformly" in said or model is not None), said
        record, _ = detach.read_record(settings)
        assert record is not None and record.port == settings.grpc_port
        assert detach.serving_status(f"127.0.0.1:{settings.grpc_port}") == "SERVING"  # the CLI has returned
        with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
            titles = [f"doc-{t:03d}" for t in range(6)]
            reply = stub.RankArtwork(page("walk-in-ray", titles, datetime.now(UTC)), timeout=30)
        assert [s.fallback_reason for s in reply.selections] == [""] * len(titles)
        if model is None:  # day one on Ray Serve too
            assert reply.policy == "uniform" and reply.model_version == ""
            assert [s.propensity for s in reply.selections] == pytest.approx([1 / pool_size(t) for t in range(6)])
        else:
            assert reply.model_version == model
        load = _LoadDuringStop(f"127.0.0.1:{settings.grpc_port}", titles)
    finally:
        stopped = time.monotonic()
        down = keyart(env, "down", "--json")
        TIMINGS["down"] = round(time.monotonic() - stopped, 1)
    assert json.loads(down)["stopped"] is True
    # Graceful drain: health said NOT_SERVING while pages were still answered; a client that
    # stops sending within 1 s of that saw no failed call; stopping took under 10 s; and
    # every acknowledged impression is in the log.
    load.join()
    TIMINGS["drain: calls / failed / NOT_SERVING after s"] = (len(load.acked), len(load.failed), load.not_serving_after)
    assert load.not_serving_after is not None, load.failed[:3]
    assert not load.failed, load.failed[:3]
    assert len(load.acked) > 10 and time.monotonic() - stopped < 10.0 + 2.0  # + the CLI's own start
    from keyart.adapters.decision_log.factory import open_log_store

    store = open_log_store(settings)
    try:
        logged = {i.decision_id for i in store.scan_impressions(datetime.now(UTC) - timedelta(days=1),
                                                                 datetime.now(UTC) + timedelta(hours=1))}
    finally:
        store.close()
    assert set(load.acked) <= logged, len(set(load.acked) - logged)
    assert not detach.pid_path(settings).exists()
    assert detach.serving_status(f"127.0.0.1:{settings.grpc_port}", timeout_s=1) != "SERVING"
    assert "nothing is running" in json.loads(keyart(env, "down", "--json"))["message"]


def test_first_week_of_a_new_customer(customer):
    from keyart.core.model import current_version

    env, settings = customer
    rng = np.random.default_rng(17)
    titles = [f"doc-{t:03d}" for t in range(TITLES)]
    faces = {f"doc-{t:03d}-art{k}": k % 3 for t in range(TITLES) for k in range(pool_size(t))}

    def take(member: str, image_id: str) -> float:  # half the members like faces, half do not
        likes_faces = int(member.rsplit("-", 1)[1]) % 2 == 0
        return 0.08 + 0.5 * ((faces[image_id] > 0) == likes_faces)

    server = BareServer(settings)
    try:
        # Day one: no model, SERVING, every title explored over its pool.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # A week of traffic, compressed: decisions spread over six hours (the server's
        # clock is set per call), members known to Feast and walk-ins it has never seen.
        started = time.monotonic()
        start = datetime.now(UTC) - timedelta(hours=7)
        pages, served = 240, 0
        for k in range(pages):
            when = start + timedelta(hours=6) * k / pages
            server.runtime.page.clock = lambda when=when: when
            m = int(rng.integers(MEMBERS + 12))
            member = f"viewer-{m:04d}" if m < MEMBERS else f"walk-in-{m:04d}"
            shown = list(rng.choice(titles, size=6, replace=False))
            device = (pb.DEVICE_TYPE_TV, pb.DEVICE_TYPE_MOBILE, pb.DEVICE_TYPE_WEB)[k % 3]
            reply = server.stub.RankArtwork(page(member, shown, when, device), timeout=10)
            assert reply.policy == "uniform" and reply.model_version == ""
            for s, t in zip(reply.selections, shown):
                assert s.title_id == t and s.fallback_reason == "" and s.explored and s.score == 0.0
                assert s.propensity == pytest.approx(1 / pool_size(titles.index(t)), abs=1e-12)
            served += len(reply.selections)
            outcomes = outcomes_for(reply, member, when, rng, take)
            if outcomes:
                accepted = server.stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=outcomes), timeout=10)
                assert accepted.accepted == len(outcomes)
        server.runtime.page.clock = lambda: datetime.now(UTC)
        assert server.runtime.writer is not None and server.runtime.writer.flush(30)
        TIMINGS["serve and explore"] = round(time.monotonic() - started, 1)

        # The log: every decision explored, with its features and exact propensity.
        log = settings.data_dir / "exports" / "week1.parquet"
        keyart(env, "log", "export", "--since", "1d", "--out", str(log), "--json")
        frame = pd.read_parquet(log)
        assert len(frame) >= served  # with the few pages Ray Serve answered in the test above
        assert (frame["policy"] == "uniform").all() and (frame["model_version"].fillna("") == "").all()
        assert (frame["fallback_reason"].fillna("") == "").all()
        assert all(len(x) > 0 for x in frame["features"])
        pools = frame["title_id"].map(lambda t: pool_size(titles.index(t)))
        assert np.allclose(frame["propensity"], 1 / pools)
        assert frame["played"].any() and (frame["max_minutes"] >= QUALITY_MINUTES).any()

        # Train on it, evaluate, promote.
        trained = json.loads(keyart(env, "train", "--log-export", str(log), "--ensemble-size", "2",
                                    "--threads", "1", "--json"))
        version = trained["version"]
        assert trained["promoted"] is False and current_version(settings.models_dir) is None
        # The model learned the customer's own vocabularies and attributes as columns.
        meta = json.loads((settings.models_dir / version / "meta.json").read_text())
        space = meta["feature_space"]
        assert space["genres"] == sorted(GENRES) and space["tone_genre"]["romantic"] == "romance"
        assert space["vocabularies"]["country"] == ["GB", "JP", "NZ"]
        assert "intense" in space["vocabularies"]["expression"] and "language" in meta["feature_names"]
        assert {"attr_cv_smile", "attr_cv_scene", "genre_anime"} <= set(meta["feature_names"])
        assert (frame["feature_schema"] == meta["feature_schema"]).all()  # day one logged in the catalog's space
        evaluated = json.loads(keyart(env, "evaluate", "--log-export", str(log), "--bootstrap", "50",
                                      "--no-report", "--json"))
        assert "candidate" in evaluated["policies"] and "random" in evaluated["policies"]
        keyart(env, "models", "promote", version)
        assert current_version(settings.models_dir) == version

        # The running server picks the model up without a restart.
        deadline = time.monotonic() + 20
        while True:
            reply = server.stub.RankArtwork(page("viewer-0002", titles[:5], datetime.now(UTC)), timeout=10)
            if reply.model_version == version or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reply.model_version == version
        assert all(s.fallback_reason == "" and 0 < s.propensity <= 1 and s.score > 0 for s in reply.selections)
    finally:
        server.close()

