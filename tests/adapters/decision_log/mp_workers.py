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
    from keyart.adapters.decision_log.sqlite import SqliteLogStore
    from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig

    config = WriterConfig(queue_size=1_000_000, batch_size=100_000, flush_interval_s=1.0,
                          journal=journal == "on", journal_rotate_bytes=200_000)
    w = DecisionLogWriter(SqliteLogStore(Path(db)), Path(root), config, shared_spool=True)
    _pages_forever(w)


def _pages_forever(w) -> None:
    """A page of 40 impressions every 2 ms, printing each page's number once
    ``submit_impressions`` returned (that is the acknowledgement), until killed."""
    import time
    from datetime import timedelta

    from adapters.decision_log.dlog_helpers import T0, make_impression

    page = 0
    while True:
        imps = [make_impression(page * 40 + j, at=T0 + timedelta(milliseconds=page),
                                decision_id=f"p{page}-{j}") for j in range(40)]
        assert w.submit_impressions(imps)
        sys.stdout.write(f"{page}\n")
        sys.stdout.flush()
        page += 1
        time.sleep(0.002)


def full_disk(store_dir: str, spool_dir: str) -> None:
    """Run inside a private mount namespace with a 4 MB tmpfs at ``store_dir``: start a
    writer, fill the disk, submit 1,200 impressions through a writer whose queue holds 500, free the disk, and
    print a JSON account of every record (written, spooled, dropped, dead-lettered)."""
    import json
    import time
    from datetime import timedelta

    from adapters.decision_log.dlog_helpers import T0, make_impression

    from keyart.adapters.decision_log.sqlite import SqliteLogStore
    from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig

    store = SqliteLogStore(Path(store_dir) / "log.sqlite")
    config = WriterConfig(queue_size=500, batch_size=100, flush_interval_s=0.02, retry_interval_s=0.05,
                          max_retry_interval_s=0.1)
    w = DecisionLogWriter(store, Path(spool_dir), config, shared_spool=True, close_store=False)
    filler = Path(store_dir) / "filler"
    with open(filler, "wb") as fh:  # the disk is full: SQLite and anything else there fail
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    ids = [f"full-{i}" for i in range(1200)]
    for k in range(0, 1200, 40):
        w.submit_impressions([make_impression(i, decision_id=ids[i]) for i in range(k, k + 40)])
        time.sleep(0.01)
    time.sleep(0.5)
    during = w.stats()
    healthy, message = w.health()
    filler.unlink()
    flushed = w.flush(30)
    after = w.stats()
    w.close()
    stored = {i.decision_id for i in store.scan_impressions(T0 - timedelta(days=1), T0 + timedelta(days=30))}
    store.close()
    print(json.dumps({"during": during, "healthy": healthy, "message": message, "flushed": flushed,
                      "after": after, "stored": len(stored & set(ids)), "submitted": len(ids)}))


def process_writer_parent(data_dir: str) -> None:
    """A serving process with its writer in a child (the defaults: WriterProcess over
    SQLite): prints the child's pid, then a page of 40 impressions every 2 ms, printing
    each page's number once submitted (the acknowledgement), until it is killed."""
    from keyart.adapters.decision_log.factory import open_decision_log
    from keyart.settings import KeyartSettings

    w = open_decision_log(KeyartSettings(data_dir=Path(data_dir)))
    sys.stdout.write(f"{w.child_pid}\n")  # type: ignore[attr-defined]
    sys.stdout.flush()
    _pages_forever(w)
