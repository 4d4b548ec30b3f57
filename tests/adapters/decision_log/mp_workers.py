"""Child-process bodies for the multi-process decision-log tests (importable by spawn)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def sqlite_writer(path: str, worker: int, n: int, batch: int, barrier=None) -> None:
    """Write n impressions (and one outcome each) in batches to a shared SQLite file;
    every worker opens (and creates) the file at the same moment after the barrier."""
    from adapters.decision_log.dlog_helpers import make_impression, make_outcome

    from keyart.adapters.decision_log.sqlite import SqliteLogStore

    if barrier is not None:
        barrier.wait(60)
    store = SqliteLogStore(Path(path))
    for start in range(0, n, batch):
        imps = [
            make_impression(worker * 1_000_000 + i, member=f"w{worker}")
            for i in range(start, min(n, start + batch))
        ]
        store.write_impressions(imps)
        store.write_outcomes([make_outcome(i.decision_id) for i in imps])
    store.close()


def crashing_writer(root: str, n: int) -> None:
    """A shared-spool writer whose store is down: spool n records, then die (os._exit)."""
    from adapters.decision_log.dlog_helpers import FakeStore, make_impression

    from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig

    store = FakeStore()
    store.down = True
    config = WriterConfig(queue_size=10_000, batch_size=50, spool_max_bytes=50_000_000, flush_interval_s=0.01)
    w = DecisionLogWriter(store, Path(root), config, shared_spool=True)
    w.submit_impressions([make_impression(i) for i in range(n)])
    assert w.flush(10)
    sys.stdout.write(str(w.spool_dir) + "\n")
    sys.stdout.flush()
    os._exit(0)  # no close(): the spool stays behind, the kernel drops the flock


def steady_writer(root: str, db: str, journal: str) -> None:
    """A shared-spool writer over SQLite at steady load: a page of 40 impressions every
    2 ms, printing each page's number once ``submit_impressions`` returned (that is the
    acknowledgement), until it is killed. A long flush interval keeps about a second of
    acknowledged pages only in memory (and in the journal, if on)."""
    import time
    from datetime import timedelta

    from adapters.decision_log.dlog_helpers import T0, make_impression

    from keyart.adapters.decision_log.sqlite import SqliteLogStore
    from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig

    config = WriterConfig(queue_size=1_000_000, batch_size=100_000, flush_interval_s=1.0,
                          journal=journal == "on", journal_rotate_bytes=200_000)
    w = DecisionLogWriter(SqliteLogStore(Path(db)), Path(root), config, shared_spool=True)
    page = 0
    while True:
        imps = [make_impression(page * 40 + j, at=T0 + timedelta(milliseconds=page),
                                decision_id=f"p{page}-{j}") for j in range(40)]
        assert w.submit_impressions(imps)
        sys.stdout.write(f"{page}\n")
        sys.stdout.flush()
        page += 1
        time.sleep(0.002)
