"""`make bench`'s transport floor: what Ray Serve adds to a page whatever the page does.

A stand-in page replaces Keyart's: it spins for as much CPU as Keyart's page takes on
the request thread (the in-process `handler` figure), holding the GIL as a page does,
then answers with one real reply built ahead of time. Plain grpc.aio processes
(SO_REUSEPORT, as many as Serve's replicas) and Ray Serve deployed from the packaged
Serve config with only the application swapped (its HAProxy ingress, the replicas'
request path, its controller and system processes) serve it side by side under the
page servers' load. Ray's extra CPU per stand-in page is Serve's own cost, which no
change to Keyart's page can remove, so it caps the per-core ratio of the page servers:
ray / bare <= bare / (bare + extra).

Run as `python -m keyart.app.bench_floor {bare,ray} --port P --reply FILE --burn-ms MS`
by `floor_figures`.
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
import time
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


def spin(seconds: float) -> None:
    """Burn `seconds` of this thread's CPU, holding the GIL as a page does."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class CannedRanker:
    """keyart.v1.ArtworkRanker answering every RankArtwork with the same reply after
    spinning for `burn_s` of CPU."""

    def __init__(self, reply: pb.RankArtworkResponse, burn_s: float) -> None:
        self.reply, self.burn_s = reply, burn_s

    async def RankArtwork(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.RankArtworkResponse:  # noqa: N802
        spin(self.burn_s)
        return self.reply

    async def ReportOutcome(self, request: bytes, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the transport floor answers RankArtwork only")


class _AlwaysServing(health_pb2_grpc.HealthServicer):
    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:  # noqa: N802
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@serve.deployment(name="ArtworkRanker")  # the packaged config's deployment: its options apply
class CannedArtworkRanker:
    """The Serve twin of `CannedRanker`, with the page deployment's name and options."""

    def __init__(self, reply_file: str, burn_s: float) -> None:
        self.reply, self.burn_s = load_reply(Path(reply_file)), burn_s

    async def RankArtwork(self, request: bytes, grpc_context: Any) -> pb.RankArtworkResponse:  # noqa: N802
        spin(self.burn_s)
        return self.reply

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:  # noqa: N802
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def build_canned_app(args: dict[str, Any]) -> serve.Application:
    """Serve app builder (the import path `floor_figures` deploys in place of Keyart's)."""
    load_reply(Path(args["reply_file"]))  # refused at deploy time with the file named
    return CannedArtworkRanker.bind(str(args["reply_file"]), float(args["burn_s"]))  # type: ignore[attr-defined]


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
                  burn_ms: float, concurrency: int, rounds: int, round_s: float, say: Callable[[str], None],
                  bare_port: int = 9303, ray_port: int = 9302) -> dict[str, Any]:
    """The stand-in page servers side by side (`bench.interleaved_figures`); Ray's extra CPU
    per page is the median of the rounds' own differences."""
    from keyart.app.bench import _settle, _start, _stop, interleaved_figures

    work = Path(tempfile.mkdtemp(prefix="keyart-bench-floor-"))
    try:
        reply_file = work / "reply.bin"
        size = canned_reply(settings, requests[0], reply_file)
        me = [sys.executable, "-m", "keyart.app.bench_floor"]
        args = ["--reply", str(reply_file), "--burn-ms", f"{burn_ms:.4f}"]
        say(f"transport floor: {replicas} bare grpc.aio processes and Ray Serve serving a stand-in page "
            f"({burn_ms:.3f} ms of spinning, then one canned {size}-byte reply) ...")
        env = dict(os.environ)
        procs: list[subprocess.Popen] = []
        try:
            procs += [_start(me + ["bare", "--port", str(bare_port), *args], env, READY, 60) for _ in range(replicas)]
            ray_proc = _start(me + ["ray", "--port", str(ray_port), *args], env, READY, 300)
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
    return {"reply_bytes": size, "burn_ms": round(burn_ms, 3), **side, "ray_extra_cpu_ms_per_page": round(extra, 3)}


def _serve_bare(port: int, reply: pb.RankArtworkResponse, burn_s: float) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        add_artwork_ranker_to_server(CannedRanker(reply, burn_s), server)
        health_pb2_grpc.add_HealthServicer_to_server(_AlwaysServing(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"{READY} canned bare grpc.aio on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def _serve_ray(port: int, reply_file: Path, burn_s: float) -> None:
    from keyart.adapters.ray_serve.launch import start_serve, stop_serve

    settings = KeyartSettings(grpc_port=port, listen_host="127.0.0.1")
    start_serve(settings, application=("keyart.app.bench_floor:build_canned_app",
                                       {"reply_file": str(reply_file.resolve()), "burn_s": burn_s}))
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
    parser.add_argument("--burn-ms", type=float, default=0.0, help="CPU each page spins for before answering")
    args = parser.parse_args(argv)
    if not 0.0 <= args.burn_ms <= 1000.0:
        print(f"error: --burn-ms {args.burn_ms:g}: must be between 0 and 1000", file=sys.stderr)
        return 2
    try:
        reply = load_reply(args.reply)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.server == "bare":
        _serve_bare(args.port, reply, args.burn_ms / 1000.0)
    else:
        _serve_ray(args.port, args.reply, args.burn_ms / 1000.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
