"""Keyart's public path for one world: import, features, serve, explore over gRPC, export, train.

Everything here goes through the ``keyart`` command line (as subprocesses with their
own KEYART_DATA_DIR) and the keyart.v1 gRPC API, as a new customer would; the
harness never copies Keyart's learner. The server is ``keyart serve-bare`` (the
grpc.aio server) with no model, so it explores uniformly (propensity 1/k, features
logged); ``KEYART_POLICY=uniform`` is set as well.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from keyart.adapters.ports import free_loopback_port
from quality.traffic import Pages
from quality.world_base import COUNTRIES, DEVICES, LANGUAGE, SyntheticWorld

REPO = Path(__file__).resolve().parents[2]
SERVE_ENV = {
    "KEYART_POLICY": "uniform",
    "KEYART_LOG_BACKEND": "sqlite",
    # The machine is shared: a slow feature lookup must not turn exploration into default artwork.
    "KEYART_FEATURE_TIMEOUT_MS": "5000",
    "KEYART_REQUEST_BUDGET_MS": "20000",
}


class KeyartCommandError(RuntimeError):
    pass


def _json_of(text: str) -> Any:
    """The JSON document a `--json` command printed (skipping any line before it)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = min((k for k in (text.find("\n{"), text.find("\n[")) if k >= 0), default=-1)
        if start < 0:
            raise
        return json.loads(text[start + 1:])


def free_port() -> int:
    return free_loopback_port()


class KeyartPath:
    """One data dir and the `keyart` commands run on it."""

    def __init__(self, data_dir: Path, say: Callable[[str], None] = print) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.say = say
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYART_")}
        self.env.update(SERVE_ENV, KEYART_DATA_DIR=str(self.data_dir),
                        KEYART_FEATURE_REPO_DIR=str(REPO / "features"))

    def cli(self, *args: str, as_json: bool = True, timeout: float = 3600.0) -> Any:
        cmd = [sys.executable, "-m", "keyart.app.cli.main", *args, *(["--json"] if as_json else [])]
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise KeyartCommandError(f"keyart {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
                                     f"\n{proc.stdout[-2000:]}")
        return _json_of(proc.stdout) if as_json else proc.stdout

    # ------------------------------------------------------------------ steps
    def import_world(self, src: Path) -> dict:
        return self.cli("world", "import", str(src))

    def apply_features(self) -> dict:
        return self.cli("features", "apply")

    @contextmanager
    def serving(self, startup_timeout: float = 300.0):
        """`keyart serve-bare` on a free port until the block ends; stopped with SIGINT (the
        log writer flushes on a clean stop)."""
        port = free_port()
        log_path = self.data_dir / "serve-bare.log"
        with open(log_path, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "keyart.app.cli.main", "serve-bare", "--port", str(port)],
                                    cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout
            while "READY" not in log_path.read_text():
                if proc.poll() is not None:
                    raise KeyartCommandError(f"serve-bare exited {proc.returncode}: {log_path.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise KeyartCommandError(f"serve-bare not READY after {startup_timeout:.0f}s")
                time.sleep(0.3)
            yield port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

    def stats(self, since: datetime) -> dict:
        return self.cli("log", "stats", "--since", since.isoformat(), "--until", "now")

    def export(self, since: datetime, out: Path) -> dict:
        return self.cli("log", "export", "--since", since.isoformat(), "--until", "now", "--out", str(out))

    def train(self, log_export: Path) -> dict:
        return self.cli("train", "--log-export", str(log_export))

    def promote(self, version: str) -> None:
        self.cli("models", "promote", version, as_json=False)


# ---------------------------------------------------------------------- exploration over gRPC
_DEVICE_ENUM: dict[str, Any] = {"TV": 1, "WEB": 2, "MOBILE": 3, "TABLET": 4}  # keyart.v1.DeviceType values


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def explore(port: int, world: SyntheticWorld, pages: Pages, seed: int, concurrency: int = 4,
            say: Callable[[str], None] = print) -> dict:
    """Send every page as RankArtwork, draw each decision's outcome from the truth and
    report it (IMPRESSION_SEEN; PLAY_STARTED and PLAYBACK_PROGRESS with the minutes when
    played). Returns counts and the served decisions (request, decision, image)."""
    return asyncio.run(_explore(port, world, pages, seed, concurrency, say))


async def _explore(port, world, pages, seed, concurrency, say) -> dict:
    from keyart.v1 import ranking_pb2 as pb
    from keyart.v1 import ranking_pb2_grpc as pbg

    image_index = {world.image_id(i): i for i in range(world.n_images)}
    served: list[tuple[int, int, int, str]] = []  # page, title, image, decision_id
    counts: dict[str, Any] = {"pages": 0, "decisions": 0, "fallbacks": 0, "outcomes": 0, "played": 0, "quality": 0,
              "policies": {}}
    pending: list[Any] = []
    lock = asyncio.Lock()
    next_page = iter(range(len(pages)))
    t0 = time.monotonic()

    async def flush(stub, force: bool = False) -> None:
        while len(pending) >= 1000 or (force and pending):
            batch = pending[:1000]
            del pending[:1000]
            resp = await stub.ReportOutcome(pb.ReportOutcomeRequest(outcomes=batch), timeout=120)
            counts["outcomes"] += resp.accepted

    async def worker(stub) -> None:
        for k in next_page:
            m = int(pages.member[k])
            country = COUNTRIES[pages.country[k]]
            req = pb.RankArtworkRequest(
                request_id=f"{world.name}-{k:06d}", member_id=world.member_id(m),
                context=pb.RequestContext(country=country, language=LANGUAGE[country],
                                          device=_DEVICE_ENUM[DEVICES[pages.device[k]]], surface="home",
                                          client_time=_ts(pages.client_time[k].to_pydatetime())),
                titles=[pb.TitleCandidates(title_id=world.title_id(int(t))) for t in pages.titles[k]])
            resp = await stub.RankArtwork(req, timeout=120)
            images = np.array([image_index[s.image_id] for s in resp.selections])
            n = len(images)
            rng = np.random.default_rng([seed, k])
            started, minutes = world.sample_outcomes(rng, np.full(n, m), images, np.full(n, pages.device[k]),
                                                     np.full(n, pages.country[k]))
            now = _ts(datetime.now(UTC))
            outs = []
            for s, st, mins in zip(resp.selections, started, minutes):
                base = dict(decision_id=s.decision_id, member_id=req.member_id, title_id=s.title_id,
                            image_id=s.image_id, event_time=now)
                outs.append(pb.Outcome(kind=pb.OUTCOME_KIND_IMPRESSION_SEEN, minutes_played=0.0, **base))
                if st:
                    outs.append(pb.Outcome(kind=pb.OUTCOME_KIND_PLAY_STARTED, minutes_played=0.0, **base))
                    outs.append(pb.Outcome(kind=pb.OUTCOME_KIND_PLAYBACK_PROGRESS, minutes_played=float(mins), **base))
            async with lock:
                for s, t, i in zip(resp.selections, pages.titles[k], images):
                    served.append((k, int(t), int(i), s.decision_id))
                    counts["fallbacks"] += bool(s.fallback_reason)
                counts["pages"] += 1
                counts["decisions"] += n
                counts["played"] += int(started.sum())
                counts["quality"] += int((minutes >= world.quality_minutes).sum())
                counts["policies"][resp.policy] = counts["policies"].get(resp.policy, 0) + n
                pending.extend(outs)
                if len(pending) >= 1000:
                    await flush(stub)
            if counts["pages"] % 2000 == 0:
                say(f"  {counts['decisions']} decisions ({time.monotonic() - t0:.0f}s)")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pbg.ArtworkRankerStub(channel)
        await asyncio.gather(*(worker(stub) for _ in range(concurrency)))
        async with lock:
            await flush(stub, force=True)
    counts["seconds"] = round(time.monotonic() - t0, 1)
    counts["served"] = served
    return counts
