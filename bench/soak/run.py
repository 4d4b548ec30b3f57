"""`make bench-soak`: the bare gRPC server's memory under fuzzing (issue 17, item 1).

Warm up with valid pages, then send N hypothesis fuzz cases (random, mutated and raw
bytes, both RPCs) and then N valid pages, on loopback to a grpc.aio server in a process
of its own (tiny catalog and model of the tests), so that its RSS is the server's alone
and not hypothesis's. Every fuzz answer must be OK or INVALID_ARGUMENT, and 20 messages of 64 MiB
RESOURCE_EXHAUSTED. The server's
RSS is sampled after the warm-up, after the fuzz and at the end; the target is the end
within 5% of the warm-up.
Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import grpc
import psutil
from fuzz_messages import RANK, REPORT, assert_clean, call_raw, outcome_requests, rank_requests, wire_cases
from hypothesis import HealthCheck, given, settings
from tiny import make_catalog, make_member, make_model

from keyart.adapters.grpc.server import start_bare_server
from keyart.core.featurize import CatalogIndex
from keyart.core.page import PageService
from keyart.core.ranker import PolicyConfig
from keyart.v1 import ranking_pb2 as pb


class _Members:
    def get(self, member_id: str):
        return make_member(member_id) if member_id.startswith("m0") else None


def _serve(ports: mp.Queue) -> None:
    """The server process: serve until killed."""
    index = CatalogIndex.build(make_catalog())
    service = PageService(index, _Members(), PolicyConfig(), feature_timeout_s=1.0, request_budget_s=2.0)
    service.set_model(make_model())
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    _, port = asyncio.run_coroutine_threadsafe(start_bare_server(service, "127.0.0.1:0"), loop).result(30)
    ports.put(port)
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args()

    ports: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    proc = psutil.Process(server.pid)

    def _rss_mb() -> float:
        return float(proc.memory_info().rss) / 2**20

    index = CatalogIndex.build(make_catalog())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    titles, images = sorted(index.catalog.titles), sorted(index.catalog.images)
    valid = pb.RankArtworkRequest(member_id="m00001", context=pb.RequestContext(device=pb.DEVICE_TYPE_TV),
                                  titles=[pb.TitleCandidates(title_id=t) for t in titles]).SerializeToString()

    def pages(n: int) -> None:
        for _ in range(n):
            code, details = call_raw(channel, RANK, valid)
            assert code == grpc.StatusCode.OK, (code, details)

    codes: dict[str, int] = {}

    def fuzz(method: str, messages, n: int) -> None:
        @settings(max_examples=n, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(wire_cases(messages))
        def case(data: bytes) -> None:
            code, details = call_raw(channel, method, data)
            assert_clean(code, details, data)
            codes[code.name] = codes.get(code.name, 0) + 1

        case()

    started = time.monotonic()
    pages(1_000)
    warm = _rss_mb()
    fuzz(RANK, rank_requests(titles, images), args.cases // 2)
    fuzz(REPORT, outcome_requests(titles, images), args.cases - args.cases // 2)
    big = b"\x0a" + b"\xff" * (64 * 2**20)  # the 64 MiB messages of the probe in issue 17
    for _ in range(20):
        code, _ = call_raw(channel, RANK, big)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code
        codes[code.name] = codes.get(code.name, 0) + 1
    after_fuzz = _rss_mb()
    pages(args.cases)
    end = _rss_mb()
    result = {
        "cases": sum(codes.values()), "codes": codes, "valid_pages": args.cases,
        "rss_mb": {"after_warm_up": round(warm, 1), "after_fuzz": round(after_fuzz, 1), "end": round(end, 1)},
        "growth": round(end / warm - 1.0, 4), "flat_within_5pct": end <= 1.05 * warm,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    channel.close()
    server.kill()


if __name__ == "__main__":
    main()
