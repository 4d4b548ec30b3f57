"""`make bench`: RankArtwork over gRPC, Ray Serve against a bare grpc.aio server.

Both servers run the same page service (same world, features, model, decision log)
in their own processes, one after the other, driven by the same closed-loop
load generator at several concurrencies; then an open-loop run at half the best
rate measures the tail latency at a realistic load. Pages are 40 titles x 12
candidates. Results go to bench/results/latest.json.

Capacity is counted in CPU, not inferred from latency: every process of a server
(its whole session: for Ray Serve the replicas, proxy, controller, raylet and GCS;
for the bare baseline as many processes as Serve has replicas, sharing the port
through SO_REUSEPORT), every thread included (the decision-log writer's, the
feature lookups'), is sampled before and after each load level, and
`cpu_ms_per_page` is that CPU divided by the pages served. The load generator's
own CPU is reported apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from keyart.app.bench_cpu import TreeCpu, processes_under
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

TITLES_PER_PAGE = 40
CANDIDATES_PER_TITLE = 12
_DEVICES = (pb.DEVICE_TYPE_TV, pb.DEVICE_TYPE_WEB, pb.DEVICE_TYPE_MOBILE, pb.DEVICE_TYPE_TABLET)


def bench_requests(settings: KeyartSettings, n: int = 256, seed: int = 5, titles: int = TITLES_PER_PAGE,
                   candidates: int = CANDIDATES_PER_TITLE) -> list[pb.RankArtworkRequest]:
    """Pages of `titles` titles x `candidates` candidates (the bench's 40 x 12) for random demo members."""
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.jobs.world.world_model import load_world

    catalog = load_catalog(settings.world_dir)
    members = load_world(settings.world_dir).members
    big = sorted((t for t in catalog.titles.values() if len(catalog.pool(t.title_id)) >= candidates),
                 key=lambda t: t.title_id)
    if len(big) < titles:
        raise RuntimeError(f"bench needs {titles} titles with >= {candidates} images; the world has {len(big)}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        m = members.iloc[int(rng.integers(len(members)))]
        page = rng.choice(len(big), size=titles, replace=False)
        out.append(
            pb.RankArtworkRequest(
                request_id=f"bench-{k}",
                member_id=m["member_id"],
                context=pb.RequestContext(
                    country=m["country"], language=m["language"],
                    device=_DEVICES[int(rng.integers(len(_DEVICES)))], surface="bench",
                ),
                titles=[
                    pb.TitleCandidates(title_id=big[i].title_id,
                                       candidate_image_ids=list(big[i].image_ids[:candidates]))
                    for i in page
                ],
            )
        )
    return out


def _summary(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    arr = np.array(latencies) * 1000.0 if latencies else np.array([np.nan])
    return {
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "requests": len(latencies),
        "errors": errors,
    }


def tree_cpu_s(root_pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants, all threads."""
    import psutil

    total = 0.0
    for proc in processes_under([root_pid]):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


# Callers share up to this many connections. One connection would pin every request to
# one of the bare server's SO_REUSEPORT processes (the kernel balances connections, not
# requests), leaving the others idle; many client hosts hold many connections in production.
MAX_CONNECTIONS = 8


def _own_connection(address: str) -> grpc.aio.Channel:
    """A channel with a TCP connection of its own (gRPC shares one between equal channels)."""
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def closed_loop(address: str, requests: list[pb.RankArtworkRequest], concurrency: int,
                      duration_s: float, sessions: list[int] | None = None) -> dict[str, float]:
    """`concurrency` callers, each sending its next request when the last returns.

    With `sessions` (the servers' root pids), the CPU of those processes and all their
    descendants over the run is measured, and the load generator's (this process) beside it.
    """
    latencies: list[float] = []
    errors = 0
    selections = fallbacks = 0
    channels = [_own_connection(address) for _ in range(min(concurrency, MAX_CONNECTIONS))]
    try:
        stubs = [ranking_pb2_grpc.ArtworkRankerStub(c) for c in channels]
        for stub in stubs:
            await stub.RankArtwork(requests[0], timeout=10)  # warm each connection
        end = time.perf_counter() + duration_s

        async def caller(offset: int) -> None:
            nonlocal errors
            i = offset
            nonlocal selections, fallbacks
            stub = stubs[offset % len(stubs)]
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    reply = await stub.RankArtwork(requests[i % len(requests)], timeout=10)
                    latencies.append(time.perf_counter() - t0)
                    selections += len(reply.selections)
                    fallbacks += sum(1 for s in reply.selections if s.fallback_reason)
                except grpc.aio.AioRpcError:
                    errors += 1
                i += concurrency

        cpu0 = [tree_cpu_s(pid) for pid in sessions or []]
        roles0 = TreeCpu.sample(sessions or [])
        own_cpu0 = time.process_time()
        t_start = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - t_start
        own_cpu = time.process_time() - own_cpu0
        per_process = [tree_cpu_s(pid) - c for pid, c in zip(sessions or [], cpu0)]
        by_role = TreeCpu.sample(sessions or []).seconds_by_role_since(roles0)
        server_cpu = sum(per_process)
    finally:
        for c in channels:
            await c.close()
    out: dict[str, Any] = _summary(latencies, errors, elapsed)
    pages = max(1, len(latencies))
    out["fallback_share"] = round(fallbacks / selections, 5) if selections else None
    out["load_generator_cpu_ms_per_page"] = round(1000.0 * own_cpu / pages, 3)
    if sessions:
        out["cpu_ms_per_page"] = round(1000.0 * server_cpu / pages, 3)
        out["cores_used"] = round(server_cpu / elapsed, 3)
        # How the load spread over the server processes (bare: the SO_REUSEPORT ones).
        out["cores_per_process"] = [round(c / elapsed, 3) for c in per_process]
        out["pages_per_s_per_core"] = round(pages / server_cpu, 1) if server_cpu > 0 else None
        # The same CPU by part of the server (replicas, log writers, HAProxy, Serve's actors, Ray's own).
        out["cpu_ms_per_page_by_role"] = {role: round(1000.0 * s / pages, 3) for role, s in sorted(by_role.items())}
    return out


async def open_loop(address: str, requests: list[pb.RankArtworkRequest], rate: float,
                    duration_s: float) -> dict[str, float]:
    """Requests sent on a fixed schedule; latency counts from the scheduled time."""
    latencies: list[float] = []
    errors = 0
    # As many connections as the closed loop's: one would pin every request to one of the
    # bare server's SO_REUSEPORT processes and measure that process's queue, not the server's.
    channels = [_own_connection(address) for _ in range(MAX_CONNECTIONS)]
    try:
        stubs = [ranking_pb2_grpc.ArtworkRankerStub(c) for c in channels]
        for stub in stubs:
            await stub.RankArtwork(requests[0], timeout=10)
        n = max(1, int(rate * duration_s))
        t0 = time.perf_counter()

        async def one(k: int) -> None:
            nonlocal errors
            due = t0 + k / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                await stubs[k % len(stubs)].RankArtwork(requests[k % len(requests)], timeout=10)
                latencies.append(time.perf_counter() - due)
            except grpc.aio.AioRpcError:
                errors += 1

        await asyncio.gather(*(one(k) for k in range(n)))
        elapsed = time.perf_counter() - t0
    finally:
        for c in channels:
            await c.close()
    return _summary(latencies, errors, elapsed) | {"target_rps": round(rate, 1)}


def _measure(address: str, requests: list[pb.RankArtworkRequest], concurrencies: list[int],
             duration_s: float, say: Callable[[str], None], name: str, sessions: list[int]) -> dict[str, Any]:
    levels = []
    for c in concurrencies:
        r = asyncio.run(closed_loop(address, requests, c, duration_s, sessions))
        say(f"  {name} concurrency {c}: {r['rps']} RPS, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"{r['cpu_ms_per_page']} ms CPU/page on {r['cores_used']} cores {r['cores_per_process']}, "
            f"fallback share {r['fallback_share']}")
        levels.append({"concurrency": c, **r})
    best = max(levels, key=lambda r: r["rps"])
    peak = levels[-1]  # the highest load the bench drives
    half = asyncio.run(open_loop(address, requests, best["rps"] / 2.0, duration_s))
    say(f"  {name} open loop at {half['target_rps']} RPS: p50 {half['p50_ms']} ms, p99 {half['p99_ms']} ms")
    return {"rps": best["rps"], "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
            "best_concurrency": best["concurrency"], "cpu_ms_per_page": best["cpu_ms_per_page"],
            "pages_per_s_per_core": best["pages_per_s_per_core"], "cores_used": best["cores_used"],
            "fallback_share_at_peak": peak["fallback_share"], "processes": len(sessions),
            "load_generator_cpu_ms_per_page": best["load_generator_cpu_ms_per_page"],
            "levels": levels, "half_rate": half}


def _signal_tree(root_pids: list[int], sig: signal.Signals) -> None:
    """Send `sig` to these processes and all their descendants."""
    import psutil

    for proc in processes_under(root_pids):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


@contextmanager
def _measuring(sessions: dict[str, list[int]], name: str) -> Iterator[None]:
    """Only server `name` runs meanwhile: every other one is paused, and all run again after."""
    for other, pids in sessions.items():
        _signal_tree(pids, signal.SIGCONT if other == name else signal.SIGSTOP)
    try:
        yield
    finally:
        for pids in sessions.values():
            _signal_tree(pids, signal.SIGCONT)


def idle_figures(sessions: dict[str, list[int]], say: Callable[[str], None],
                 seconds: float = 6.0) -> dict[str, dict[str, float]]:
    """Cores each server's processes use with no request at all, by role (the other paused)."""
    out: dict[str, dict[str, float]] = {}
    for name, pids in sessions.items():
        with _measuring(sessions, name):
            time.sleep(0.5)  # resumed threads settle before the clock starts
            before = TreeCpu.sample(pids)
            time.sleep(seconds)
            by_role = TreeCpu.sample(pids).seconds_by_role_since(before)
        out[name] = {role: round(s / seconds, 4) for role, s in sorted(by_role.items())}
        out[name]["total"] = round(sum(by_role.values()) / seconds, 4)
    say("  idle: " + "; ".join(f"{name} {roles['total']} cores {roles}" for name, roles in out.items()))
    return out


def interleaved_figures(addresses: dict[str, str], sessions: dict[str, list[int]],
                        requests: list[pb.RankArtworkRequest], concurrency: int, rounds: int, round_s: float,
                        say: Callable[[str], None]) -> dict[str, Any]:
    """Both servers up at once, measured in alternating rounds (order flipped each round).

    A shared machine's speed drifts by tens of percent within minutes, so two servers
    measured one after the other compare the machine's moods as much as the servers.
    Rounds side by side see the same drift; the ratio is the median of each round's own
    ray / bare ratio, and each server's figures are medians over its rounds. The server
    not being measured is paused (SIGSTOP on its whole process tree), so its background
    threads and Ray's system processes do not compete with the one measured.
    """
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in addresses}
    names = list(addresses)
    for k in range(rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            with _measuring(sessions, name):
                time.sleep(0.5)  # resumed threads settle before the clock starts
                per[name].append(asyncio.run(closed_loop(addresses[name], requests, concurrency, round_s,
                                                         sessions[name])))
    out: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds, "round_s": round_s}
    for name, results in per.items():
        out[name] = {key: round(float(np.median([r[key] or 0.0 for r in results])), 3)
                     for key in ("rps", "cpu_ms_per_page", "pages_per_s_per_core", "fallback_share")}
        out[name]["cpu_ms_per_page_rounds"] = [r["cpu_ms_per_page"] for r in results]
        roles = sorted({role for r in results for role in r.get("cpu_ms_per_page_by_role", {})})
        out[name]["cpu_ms_per_page_by_role"] = {
            role: round(float(np.median([r.get("cpu_ms_per_page_by_role", {}).get(role, 0.0) for r in results])), 3)
            for role in roles}
    ratios = [r["pages_per_s_per_core"] / b["pages_per_s_per_core"]
              for r, b in zip(per["ray"], per["bare"]) if r["pages_per_s_per_core"] and b["pages_per_s_per_core"]]
    out["ratio_per_core_rounds"] = [round(x, 3) for x in ratios]
    out["ratio_per_core"] = round(float(np.median(ratios)), 3) if ratios else None
    say(f"  side by side, {rounds} rounds of {round_s:.0f} s at concurrency {concurrency}: CPU per page "
        f"bare {out['bare']['cpu_ms_per_page']} ms, ray {out['ray']['cpu_ms_per_page']} ms; "
        f"ratio per core {out['ratio_per_core']} (rounds {out['ratio_per_core_rounds']})")
    for name in names:
        say(f"  {name} CPU per page by role (ms): {out[name]['cpu_ms_per_page_by_role']}")
    return out


def core_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], pages: int = 400) -> dict[str, Any]:
    """In-process cost of one page through the page service, with and without decision logging.

    The two variants alternate request by request so machine noise hits both alike.
    `cpu_ms_per_page` is this process's CPU (every thread: the handler, the feature
    lookups and the decision-log writer, flushed before the clock stops) per page logged.
    """
    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime

    runtime = Runtime.start_serving(settings, watch_interval_s=0)
    page, sink = runtime.page, runtime.page.sink
    calls = RankerCalls(page)
    try:
        for r in requests[:20]:
            calls.rank(r)  # warm caches and the feature thread
        if runtime.writer is not None:
            runtime.writer.flush(60)
        cpu = _ServerClock(runtime.writer)
        for k in range(pages):
            calls.rank(requests[k % len(requests)])
        if runtime.writer is not None:
            runtime.writer.flush(60)
        cpu_ms = 1000.0 * cpu.seconds() / pages
        timings: dict[str, list[float]] = {"with_log": [], "without_log": []}
        for k in range(pages):
            for variant in ("with_log", "without_log") if k % 2 == 0 else ("without_log", "with_log"):
                page.sink = sink if variant == "with_log" else None
                t0 = time.perf_counter()
                calls.rank(requests[k % len(requests)])
                timings[variant].append(time.perf_counter() - t0)
        page.sink = sink
        out: dict[str, Any] = {"policy": settings.policy, "cpu_ms_per_page": round(cpu_ms, 3)}
        for variant, values in timings.items():
            arr = np.array(values) * 1000.0
            out[variant] = {"p50_ms": round(float(np.percentile(arr, 50)), 3),
                            "p99_ms": round(float(np.percentile(arr, 99)), 3)}
        out["p50_ms"], out["p99_ms"] = out["with_log"]["p50_ms"], out["with_log"]["p99_ms"]
        out["model"] = (page.model.meta.get("compiled_trees") if page.model is not None else None)
        out["log_writer"] = runtime.writer.stats() if runtime.writer is not None else {}
        return out
    finally:
        runtime.close()


class _StageClock:
    """Thread CPU spent inside named callables, summed per name (µs-cheap wrappers)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.thread_time
        self.seconds.setdefault(name, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += clock() - t0

        return timed


_ABSENT = object()


@contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """setattr each (owner, name, value) for the block, then restore what was there."""
    saved = [(owner, name, owner.__dict__.get(name, _ABSENT)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, old in reversed(saved):
            if old is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, old)



def stage_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], pages: int = 512,
                  ) -> dict[str, Any]:
    """Where a page's CPU goes, in process, decision log on: ms of CPU per page per stage.

    The request thread's stages are timed by wrapping the callables the page path calls
    (request parsing, member lookup, feature matrix, forests, choice, log submit with its
    journal, response), the rest of that thread is `handler_other`; `writer` is the
    decision-log writer's own CPU, its child process's or its thread's (flushed before
    the clocks stop), and `process` every thread's of both processes. The wrappers cost about a microsecond per page.
    """
    from keyart.adapters.decision_log.writer import WRITER_THREAD_NAME
    from keyart.adapters.grpc import convert
    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime
    from keyart.core import ranker as ranker_module

    runtime = Runtime.start_serving(settings, watch_interval_s=0)
    page = runtime.page
    calls = RankerCalls(page)
    stages = _StageClock()
    model = page.model
    patches: list[tuple[Any, str, Any]] = [
        (convert, "parse_message", stages.wrap("parse", convert.parse_message)),
        (convert, "parse_rank_request", stages.wrap("parse", convert.parse_rank_request)),
        (page, "_member", stages.wrap("member_features", page._member)),
        (ranker_module, "build_matrix", stages.wrap("feature_matrix", ranker_module.build_matrix)),
        (ranker_module.Ranker, "_choose_all", stages.wrap("choice", ranker_module.Ranker._choose_all)),
        (ranker_module.Ranker, "_choose_in_order", stages.wrap("choice", ranker_module.Ranker._choose_in_order)),
        (page, "_log", stages.wrap("log_submit", page._log)),
        (convert, "to_response", stages.wrap("response", convert.to_response)),
    ]
    if model is not None:
        patches += [(model, "predict", stages.wrap("forests", model.predict)),
                    (model, "predict_ensemble", stages.wrap("forests", model.predict_ensemble))]
    try:
        for r in requests[:20]:
            calls.rank(r)  # warm caches
        if runtime.writer is not None:
            runtime.writer.flush(60)
        writer = next((t for t in threading.enumerate() if t.name == WRITER_THREAD_NAME), None)
        writer_clock = time.pthread_getcpuclockid(writer.ident) if writer is not None and writer.ident else None
        child = getattr(runtime.writer, "child_pid", None)  # the writer's own process, if any
        with _patched(patches):
            w0 = time.clock_gettime(writer_clock) if writer_clock is not None else 0.0
            c0 = _cpu_seconds(child)
            h0, p0 = time.thread_time(), time.process_time()
            for k in range(pages):
                calls.rank(requests[k % len(requests)])
            handler = time.thread_time() - h0
            if runtime.writer is not None:
                runtime.writer.flush(60)
            in_child = _cpu_seconds(child) - c0
            process = time.process_time() - p0 + in_child
            written = (time.clock_gettime(writer_clock) - w0 if writer_clock is not None else 0.0) + in_child
    finally:
        runtime.close()
    per_page = {name: round(1000.0 * s / pages, 3) for name, s in stages.seconds.items()}
    per_page["handler_other"] = round(1000.0 * (handler - sum(stages.seconds.values())) / pages, 3)
    per_page["handler"] = round(1000.0 * handler / pages, 3)
    per_page["writer"] = round(1000.0 * written / pages, 3)
    per_page["process"] = round(1000.0 * process / pages, 3)
    return {"pages": pages, "policy": settings.policy, "cpu_ms_per_page": per_page}


def _cpu_seconds(pid: int | None) -> float:
    """A process's CPU seconds, every thread's, to the nanosecond: the scheduler's own
    account (/proc/PID/task/*/schedstat), not psutil's 10 ms clock ticks, which would
    swamp a block of 25 pages. 0 for no process (a writer without a child)."""
    if pid is None:
        return 0.0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended in between
            pass
    return total / 1e9


class _ServerClock:
    """CPU seconds of this process and of its decision-log writer's child process, if
    any, since construction: what an in-process figure costs the server."""

    def __init__(self, writer: object) -> None:
        self._child = getattr(writer, "child_pid", None)
        self._start = time.process_time() + _cpu_seconds(self._child)

    def seconds(self) -> float:
        return time.process_time() + _cpu_seconds(self._child) - self._start


def policy_cpu_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], blocks: int = 16,
                       block_pages: int = 25) -> dict[str, Any]:
    """Thompson sampling's CPU per page against epsilon-greedy's, side by side: one page
    service (its model's Thompson forests compiled) alternates the two policies block by
    block, the order flipped each block; each block's CPU is the process's (writer flushed
    before the clock stops). Figures are medians over blocks; the ratio is the median of
    each pair's own."""
    from dataclasses import replace as with_fields

    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime

    runtime = Runtime.start_serving(settings.model_copy(update={"policy": "thompson"}), watch_interval_s=0)
    page, calls = runtime.page, RankerCalls(runtime.page)
    configs = {name: with_fields(page.policy, name=name) for name in ("epsilon_greedy", "thompson")}
    per_page: dict[str, list[float]] = {name: [] for name in configs}
    try:
        for r in requests[:20]:
            calls.rank(r)
        k = 0
        for b in range(blocks):
            for name in ("epsilon_greedy", "thompson") if b % 2 == 0 else ("thompson", "epsilon_greedy"):
                page.policy = configs[name]
                clock = _ServerClock(runtime.writer)
                for _ in range(block_pages):
                    calls.rank(requests[k % len(requests)])
                    k += 1
                if runtime.writer is not None:
                    runtime.writer.flush(60)
                per_page[name].append(1000.0 * clock.seconds() / block_pages)
    finally:
        runtime.close()
    ratios = [t / e for t, e in zip(per_page["thompson"], per_page["epsilon_greedy"])]
    return {"cpu_ms_per_page": round(float(np.median(per_page["thompson"])), 3),
            "epsilon_greedy_cpu_ms_per_page": round(float(np.median(per_page["epsilon_greedy"])), 3),
            "ratio": round(float(np.median(ratios)), 3), "blocks": blocks, "block_pages": block_pages}


def journal_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], pages: int = 600,
                    ) -> dict[str, Any]:
    """What the write-ahead journal costs a page: two writers over two SQLite files, one
    journaling and one not, alternate page by page under one page service. Latency is the
    call's wall time; CPU is the request thread's (the journal's encode and write run there)."""
    from keyart.adapters.decision_log.sqlite import SqliteLogStore
    from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig
    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime

    runtime = Runtime.start_serving(settings, watch_interval_s=0)
    page, own = runtime.page, runtime.page.sink
    calls = RankerCalls(page)
    with tempfile.TemporaryDirectory(prefix="keyart-journal-bench-") as tmp:
        writers = {name: DecisionLogWriter(SqliteLogStore(Path(tmp) / f"{name}.sqlite"), Path(tmp) / f"spool-{name}",
                                           WriterConfig(journal=name == "journal"), shared_spool=True)
                   for name in ("journal", "no_journal")}
        wall: dict[str, list[float]] = {name: [] for name in writers}
        cpu: dict[str, list[float]] = {name: [] for name in writers}
        try:
            for k in range(pages + 40):
                for name in ("journal", "no_journal") if k % 2 == 0 else ("no_journal", "journal"):
                    page.sink = writers[name]
                    c0, t0 = time.thread_time(), time.perf_counter()
                    calls.rank(requests[k % len(requests)])
                    if k >= 40:  # the first pages warm caches and the feature thread
                        wall[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.thread_time() - c0)
            stats = writers["journal"].stats()
        finally:
            page.sink = own
            for w in writers.values():
                w.close()
            runtime.close()
    out: dict[str, Any] = {"pages_each": pages}
    for name in writers:
        ms = np.array(wall[name]) * 1000.0
        out[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
                     "thread_cpu_ms": round(1000.0 * float(np.mean(cpu[name])), 3)}
    out["added_p50_ms"] = round(out["journal"]["p50_ms"] - out["no_journal"]["p50_ms"], 3)
    out["added_p99_ms"] = round(out["journal"]["p99_ms"] - out["no_journal"]["p99_ms"], 3)
    out["added_cpu_ms_per_page"] = round(out["journal"]["thread_cpu_ms"] - out["no_journal"]["thread_cpu_ms"], 3)
    out["journal_errors"] = stats["journal_errors"]
    return out


def shadow_figures(settings: KeyartSettings, requests: list[pb.RankArtworkRequest], pages: int = 400,
                   block: int = 20) -> dict[str, Any]:
    """What one shadow model costs a page: the page service with no experiment against one
    with a single-cell experiment and one shadow (the promoted model, greedy), alternating
    in blocks of `block` pages; CPU of every thread (writer flushed per block) and latency."""
    from keyart.adapters.grpc.servicer import RankerCalls
    from keyart.app.runtime import Runtime
    from keyart.core.experiment import Cell, Experiment, Shadow

    runtime = Runtime.start_serving(settings, watch_interval_s=0)
    page, model = runtime.page, runtime.page.model
    if model is None:
        runtime.close()
        return {"skipped": "no promoted model"}
    calls = RankerCalls(page)
    shadowed = Experiment("bench-shadow", cells=(Cell("all", 1.0),), control="all",
                          shadows=(Shadow("shadow", model.version),))
    cpu = {"without": 0.0, "with_one_shadow": 0.0}
    lat: dict[str, list[float]] = {"without": [], "with_one_shadow": []}
    try:
        for r in requests[:20]:
            calls.rank(r)
        for b in range(0, pages, block):
            for variant in ("without", "with_one_shadow") if (b // block) % 2 == 0 else ("with_one_shadow", "without"):
                page.set_experiment(shadowed if variant != "without" else None, {model.version: model})
                clock = _ServerClock(runtime.writer)
                for k in range(b, b + block):
                    t0 = time.perf_counter()
                    calls.rank(requests[k % len(requests)])
                    lat[variant].append(time.perf_counter() - t0)
                if runtime.writer is not None:
                    runtime.writer.flush(60)
                cpu[variant] += clock.seconds()
    finally:
        runtime.close()
    n = len(lat["without"])
    out: dict[str, Any] = {}
    for variant in cpu:
        arr = np.array(lat[variant]) * 1000.0
        out[variant] = {"cpu_ms_per_page": round(1000.0 * cpu[variant] / n, 3),
                        "p50_ms": round(float(np.percentile(arr, 50)), 3),
                        "p99_ms": round(float(np.percentile(arr, 99)), 3)}
    out["added_cpu_ms_per_page"] = round(out["with_one_shadow"]["cpu_ms_per_page"]
                                         - out["without"]["cpu_ms_per_page"], 3)
    out["cpu_ratio"] = round(out["with_one_shadow"]["cpu_ms_per_page"] / out["without"]["cpu_ms_per_page"], 3)
    return out


def _start(cmd: list[str], env: dict[str, str], ready: str, timeout_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited: {''.join(lines[-20:])}")
            continue
        lines.append(line)
        if ready in line:
            # Keep reading what it prints: a full pipe would block the server mid-run.
            threading.Thread(target=proc.stdout.read, name="bench-drain", daemon=True).start()
            return proc
    _stop(proc)
    raise RuntimeError(f"{' '.join(cmd)} not ready after {timeout_s:.0f} s: {''.join(lines[-20:])}")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _settle(address: str, quiet_s: float = 10.0, timeout_s: float = 120.0) -> None:
    """Wait until `address` has answered Health SERVING throughout the last `quiet_s`."""
    from keyart.adapters.ray_serve.app import wait_serving

    deadline = time.monotonic() + timeout_s
    since: float | None = None
    while time.monotonic() < deadline:
        try:
            wait_serving(address, timeout_s=2.0)
            since = since if since is not None else time.monotonic()
        except TimeoutError:
            since = None
        if since is not None and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{address} did not answer SERVING for {quiet_s:.0f} s in a row within {timeout_s:.0f} s")


def scratch_log_settings(settings: KeyartSettings, scratch: Path) -> KeyartSettings:
    """`settings` with the decision log (SQLite file, spools and journals) under `scratch`:
    the embedded log, even where a Cassandra log is configured (`make bench-log` measures that)."""
    return settings.model_copy(update={"log_backend": "sqlite", "log_sqlite_file": scratch / "in-process.sqlite",
                                       "log_spool_dir": scratch / "spool-in-process"})


def run_bench(settings: KeyartSettings, duration_s: float, concurrencies: list[int], out: Path,
              say: Callable[[str], None], bare_port: int = 9301, ray_port: int = 9300,
              rounds: int = 6) -> dict[str, Any]:
    from keyart.app.build import ensure_built

    ensure_built(settings, say)
    requests = bench_requests(settings)
    keyart = [sys.executable, "-m", "keyart.app.cli.main"]
    env = dict(os.environ)

    from keyart.adapters.ray_serve.launch import THROUGHPUT_ENV, load_serve_config

    deployment = load_serve_config(settings)["applications"][0]["deployments"][0]
    auto = deployment.get("autoscaling_config") or {}
    replicas = int(deployment.get("num_replicas") or auto.get("initial_replicas") or auto.get("min_replicas") or 1)

    # Every figure logs its synthetic pages under a scratch directory, never into the
    # configured decision log: `keyart train` reads that log, and bench pages (which get
    # no outcomes) would teach the next model that nothing is ever played. A fresh log also
    # keeps runs comparable: a store grown by every earlier run writes more slowly.
    scratch = Path(tempfile.mkdtemp(prefix="keyart-bench-log-"))
    settings = scratch_log_settings(settings, scratch)
    try:
        say("decision core in process (with and without logging) ...")
        core = core_figures(settings, requests)
        say(f"  core p50 {core['p50_ms']} ms, p99 {core['p99_ms']} ms with logging "
            f"(p50 {core['without_log']['p50_ms']} ms without); {core['cpu_ms_per_page']} ms CPU per page, "
            "writer included")
        stages = stage_figures(settings, requests)
        say("  CPU per page by stage (ms): " + ", ".join(f"{k} {v}" for k, v in stages["cpu_ms_per_page"].items()))
        thompson = policy_cpu_figures(settings, requests)
        say(f"  thompson {thompson['cpu_ms_per_page']} ms against epsilon-greedy "
            f"{thompson['epsilon_greedy_cpu_ms_per_page']} ms CPU per page, side by side: ratio {thompson['ratio']}")

        shadow = shadow_figures(settings, requests)
        if "skipped" not in shadow:
            say(f"  one shadow model: +{shadow['added_cpu_ms_per_page']} ms CPU per page "
                f"({shadow['cpu_ratio']}x), p99 {shadow['with_one_shadow']['p99_ms']} ms "
                f"against {shadow['without']['p99_ms']} ms")

        journal = journal_figures(settings, requests)
        say(f"  write-ahead journal: +{journal['added_cpu_ms_per_page']} ms CPU per page, p50 "
            f"+{journal['added_p50_ms']} ms, p99 {journal['journal']['p99_ms']} ms against "
            f"{journal['no_journal']['p99_ms']} ms")

        say(f"bare grpc.aio: {replicas} processes on :{bare_port} (SO_REUSEPORT), as many as Serve's replicas, "
            f"and Ray Serve on :{ray_port}, both up for the whole run (the one not measured paused) ...")
        # Each server logs to a SQLite file and spool of its own: a server paused while it holds
        # a shared file's write lock would stall the other's writer into its spool.
        envs = {name: {**env, "KEYART_LOG_BACKEND": "sqlite", "KEYART_LOG_SQLITE_FILE": str(scratch / f"{name}.sqlite"),
                       "KEYART_LOG_SPOOL_DIR": str(scratch / f"spool-{name}")} for name in ("bare", "ray")}
        procs: list[subprocess.Popen] = []
        try:
            procs += [_start(keyart + ["serve-bare", "--port", str(bare_port)], envs["bare"], "READY", 180)
                      for _ in range(replicas)]
            ray_proc = _start(keyart + ["up", "--port", str(ray_port)], envs["ray"], "READY", 300)
            procs.append(ray_proc)
            # Serve reloads its HAProxy as replicas join; a reload paused mid-way (the sweeps
            # SIGSTOP the server not measured) times out and leaves the ingress refusing calls.
            _settle(f"127.0.0.1:{ray_port}")
            addresses = {"bare": f"127.0.0.1:{bare_port}", "ray": f"127.0.0.1:{ray_port}"}
            sessions = {"bare": [p.pid for p in procs[:-1]], "ray": [ray_proc.pid]}
            idle = idle_figures(sessions, say)
            # Each sweep runs with the other server paused, as in the side-by-side rounds.
            with _measuring(sessions, "bare"):
                bare = _measure(addresses["bare"], requests, concurrencies, duration_s, say, "bare", sessions["bare"])
            with _measuring(sessions, "ray"):
                ray_result = _measure(addresses["ray"], requests, concurrencies, duration_s, say, "ray",
                                      sessions["ray"])
            side = interleaved_figures(addresses, sessions, requests,
                                       min(bare["best_concurrency"], ray_result["best_concurrency"]),
                                       rounds, max(2.0, duration_s / 2), say)
        finally:
            for p in procs:
                _stop(p)
        # What Ray Serve itself adds to a page, measured with a stand-in page of the same
        # request-thread CPU (after the page servers stopped: one Ray instance at a time).
        from keyart.app.bench_floor import floor_figures, ratio_ceiling

        floor = floor_figures(settings, requests, replicas, stages["cpu_ms_per_page"]["handler"],
                              side["concurrency"], rounds, max(2.0, duration_s / 2), say)
        floor["ratio_per_core_ceiling"] = round(ratio_ceiling(side["bare"]["cpu_ms_per_page"],
                                                              floor["ray_extra_cpu_ms_per_page"]), 3)
        say(f"  Ray Serve adds {floor['ray_extra_cpu_ms_per_page']} ms of CPU to a stand-in page; with this "
            f"run's bare page ({side['bare']['cpu_ms_per_page']} ms) ratio_per_core can reach at most "
            f"{floor['ratio_per_core_ceiling']}")

        per_core_ray, per_core_bare = side["ray"]["pages_per_s_per_core"], side["bare"]["pages_per_s_per_core"]
        titles_per_s_per_core = (per_core_ray or 0.0) * TITLES_PER_PAGE
        result = {
            "ray": ray_result,
            "bare": bare,
            "ratio_rps": round(ray_result["rps"] / bare["rps"], 3) if bare["rps"] else None,
            # The headline figures: medians of the side-by-side rounds (the sweeps' own are in "bare", "ray").
            "cpu_ms_per_page": {"bare": side["bare"]["cpu_ms_per_page"], "ray": side["ray"]["cpu_ms_per_page"]},
            # Which processes the CPU per page went to (side-by-side medians), and what each
            # server's processes burn with no load at all (Ray's actors and system processes tick).
            "cpu_ms_per_page_by_role": {"bare": side["bare"]["cpu_ms_per_page_by_role"],
                                        "ray": side["ray"]["cpu_ms_per_page_by_role"]},
            "idle_cores": idle,
            "pages_per_s_per_core": {"bare": per_core_bare, "ray": per_core_ray},
            "ratio_per_core": side["ratio_per_core"],
            "side_by_side": side,
            "fallback_share": max(bare["fallback_share_at_peak"] or 0.0, ray_result["fallback_share_at_peak"] or 0.0),
            "load_generator_cpu_ms_per_page": {"bare": bare["load_generator_cpu_ms_per_page"],
                                               "ray": ray_result["load_generator_cpu_ms_per_page"]},
            "core": core,
            "stages": stages,
            "thompson": thompson,
            "shadow": shadow,
            "journal": journal,
            "transport_floor": floor,
            # 20M artwork requests (titles) per second, at Ray Serve's measured titles per core-second.
            "cores_for_20M_rps": round(20_000_000 / titles_per_s_per_core) if titles_per_s_per_core else None,
            "setup": {
                "page": f"{TITLES_PER_PAGE} titles x {CANDIDATES_PER_TITLE} candidates",
                "duration_s_per_level": duration_s,
                "cores": os.cpu_count(),
                "machine": platform.machine(),
                "ray_env": {k: os.environ.get(k, v) for k, v in THROUGHPUT_ENV.items()},
                "ray_deployment": deployment,
                "load_generator": "one grpc.aio process on the same machine (shares the cores; its CPU is "
                                  "load_generator_cpu_ms_per_page, not in the servers' figures)",
                "bare_processes": replicas,
            },
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        say(f"wrote {out}: ratio_rps {result['ratio_rps']}")
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
