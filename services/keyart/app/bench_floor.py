"""`make bench`'s transport floor: what each server costs a page when the page costs nothing.

Both servers answer RankArtwork with one real reply built ahead of time and never look
at the request: plain grpc.aio processes (SO_REUSEPORT, as many as Serve's replicas) and
Ray Serve deployed from the packaged Serve config (its HAProxy ingress, the replicas'
request path, its controller and system processes), with only the application swapped.
They are measured side by side like the page servers. Ray's extra CPU per page here is
Serve's own cost, which no change to Keyart's page can remove, so it caps the per-core
ratio of the page servers: ray / bare <= bare / (bare + extra). The floor runs at several
times the page rate, which spreads Ray's idle ticking over more pages: the extra it
finds is a lower bound, and the cap an upper one.

Run as `python -m keyart.app.bench_floor {bare,ray} --port P --reply FILE` by `floor_figures`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ray import serve

from keyart.adapters.grpc.wire import add_artwork_ranker_to_server
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb

READY = "READY"


def load_reply(path: Path) -> pb.RankArtworkResponse:
    """The canned reply: a serialized RankArtworkResponse (ValueError naming the file if not)."""
    try:
        reply = pb.RankArtworkResponse.FromString(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the canned reply ({exc.strerror})") from exc
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"{path}: not a serialized RankArtworkResponse") from exc
    if not reply.selections:
        raise ValueError(f"{path}: a canned reply without selections measures nothing")
    return reply


class CannedRanker:
    """keyart.v1.ArtworkRanker answering every RankArtwork with the same reply."""

    def __init__(self, reply: pb.RankArtworkResponse) -> None:
        self.reply = reply

    async def RankArtwork(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.RankArtworkResponse:  # noqa: N802
        return self.reply

    async def ReportOutcome(self, request: bytes, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the transport floor answers RankArtwork only")


class _AlwaysServing(health_pb2_grpc.HealthServicer):
    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:  # noqa: N802
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@serve.deployment(name="ArtworkRanker")  # the packaged config's deployment: its options apply
class CannedArtworkRanker:
    """The Serve twin of `CannedRanker`, with the page deployment's name and options."""

    def __init__(self, reply_file: str) -> None:
        self.reply = load_reply(Path(reply_file))

    async def RankArtwork(self, request: bytes, grpc_context: Any) -> pb.RankArtworkResponse:  # noqa: N802
        return self.reply

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:  # noqa: N802
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def build_canned_app(args: dict[str, Any]) -> serve.Application:
    """Serve app builder (the import path `floor_figures` deploys in place of Keyart's)."""
    load_reply(Path(args["reply_file"]))  # refused at deploy time with the file named
    return CannedArtworkRanker.bind(str(args["reply_file"]))  # type: ignore[attr-defined]


def ratio_ceiling(bare_cpu_ms: float, ray_extra_ms: float) -> float:
    """The highest ray / bare pages-per-core ratio a page of `bare_cpu_ms` can reach when
    Ray Serve adds `ray_extra_ms` of CPU to every page."""
    if bare_cpu_ms <= 0:
        raise ValueError("bare_cpu_ms must be positive")
    return bare_cpu_ms / (bare_cpu_ms + max(ray_extra_ms, 0.0))


def canned_reply(settings: KeyartSettings, request: pb.RankArtworkRequest, path: Path) -> int:
    """Rank `request` once through the real page service and save the reply; its size."""
    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime

    runtime = Runtime.start_serving(settings, watch_interval_s=0)
    try:
        data = RankerCalls(runtime.page).rank(request).SerializeToString()
    finally:
        runtime.close()
    path.write_bytes(data)
    return len(data)


def floor_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], replicas: int,
                  concurrency: int, rounds: int, round_s: float, say: Callable[[str], None],
                  bare_port: int = 9303, ray_port: int = 9302) -> dict[str, Any]:
    """The canned servers side by side (`bench.interleaved_figures`); Ray's extra CPU per
    page is the median of the rounds' own differences."""
    from keyart.app.bench import _settle, _start, _stop, interleaved_figures

    work = Path(tempfile.mkdtemp(prefix="keyart-bench-floor-"))
    try:
        reply_file = work / "reply.bin"
        size = canned_reply(settings, requests[0], reply_file)
        me = [sys.executable, "-m", "keyart.app.bench_floor"]
        say(f"transport floor: {replicas} bare grpc.aio processes and Ray Serve answering one canned "
            f"{size}-byte reply ...")
        env = dict(os.environ)
        procs: list[subprocess.Popen] = []
        try:
            procs += [_start(me + ["bare", "--port", str(bare_port), "--reply", str(reply_file)], env, READY, 60)
                      for _ in range(replicas)]
            ray_proc = _start(me + ["ray", "--port", str(ray_port), "--reply", str(reply_file)], env, READY, 300)
            procs.append(ray_proc)
            _settle(f"127.0.0.1:{ray_port}")
            side = interleaved_figures({"bare": f"127.0.0.1:{bare_port}", "ray": f"127.0.0.1:{ray_port}"},
                                       {"bare": [p.pid for p in procs[:-1]], "ray": [ray_proc.pid]},
                                       requests, concurrency, rounds, round_s, say)
        finally:
            for p in procs:
                _stop(p)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = statistics.median(r - b for r, b in zip(side["ray"]["cpu_ms_per_page_rounds"],
                                                    side["bare"]["cpu_ms_per_page_rounds"]))
    return {"reply_bytes": size, **side, "ray_extra_cpu_ms_per_page": round(extra, 3)}


def _serve_bare(port: int, reply: pb.RankArtworkResponse) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        add_artwork_ranker_to_server(CannedRanker(reply), server)
        health_pb2_grpc.add_HealthServicer_to_server(_AlwaysServing(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"{READY} canned bare grpc.aio on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def _serve_ray(port: int, reply_file: Path) -> None:
    from keyart.adapters.ray_serve.launch import start_serve, stop_serve

    settings = KeyartSettings(grpc_port=port, listen_host="127.0.0.1")
    start_serve(settings, application=("keyart.app.bench_floor:build_canned_app",
                                       {"reply_file": str(reply_file.resolve())}))
    print(f"{READY} canned Ray Serve on 127.0.0.1:{port}", flush=True)
    try:
        signal.pause()  # until the bench's SIGINT
    except KeyboardInterrupt:
        pass
    finally:
        stop_serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyart.app.bench_floor", description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["bare", "ray"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", type=Path, required=True, help="a serialized RankArtworkResponse")
    args = parser.parse_args(argv)
    try:
        reply = load_reply(args.reply)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.server == "bare":
        _serve_bare(args.port, reply)
    else:
        _serve_ray(args.port, args.reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
