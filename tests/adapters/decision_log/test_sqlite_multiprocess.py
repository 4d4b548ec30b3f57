"""Several processes writing one SQLite decision log concurrently lose nothing."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

from adapters.decision_log.dlog_helpers import T0
from adapters.decision_log.mp_workers import sqlite_writer

from keyart.adapters.decision_log.sqlite import SqliteLogStore


def test_concurrent_processes_lose_nothing(tmp_path) -> None:
    path = tmp_path / "shared.sqlite"
    ctx = mp.get_context("spawn")
    n, workers = 1500, 3
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=sqlite_writer, args=(str(path), w, n, 25, barrier)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    store = SqliteLogStore(path)
    # make_impression(i) is decided at T0 + i seconds; worker w uses i = w * 1e6 + k.
    got = list(store.scan_impressions(T0, T0 + timedelta(seconds=3_000_000)))
    assert len(got) == n * workers
    assert len({i.decision_id for i in got}) == n * workers
    counts = store.counts()
    assert counts["outcomes"] == n * workers and counts["outcomes_unknown_decision"] == 0
    assert counts["journal_mode"] == "wal"
    store.close()
