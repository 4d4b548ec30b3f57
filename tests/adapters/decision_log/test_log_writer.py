from __future__ import annotations

import logging
import sqlite3
import time
from datetime import timedelta

import pytest
from adapters.decision_log.dlog_helpers import T0, FakeStore, make_impression, make_outcome

from keyart.adapters.decision_log.spool_dirs import DEAD_LETTER_FILE
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.adapters.decision_log.writer import DecisionLogWriter, WriterConfig


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore()


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def writer_for(store, tmp_path, **kw) -> DecisionLogWriter:
    args = {
        "queue_size": 10_000,
        "batch_size": 50,
        "spool_max_bytes": 50_000_000,
        "flush_interval_s": 0.05,
        "retry_interval_s": 0.02,
        "max_retry_interval_s": 0.05,
    }
    args.update(kw)
    opts = {k: args.pop(k) for k in ("close_store", "start") if k in args}
    return DecisionLogWriter(store, tmp_path / "spool", WriterConfig(**args), **opts)


def test_batches_are_bounded_and_everything_is_written(fake_store: FakeStore, tmp_path) -> None:
    w = writer_for(fake_store, tmp_path, batch_size=50)
    for k in range(10):
        assert w.submit_impressions([make_impression(k * 23 + j) for j in range(23)])
    assert w.flush(5)
    assert len(fake_store.impressions) == 230
    assert all(n <= 50 for _, n in fake_store.calls)
    assert max(n for _, n in fake_store.calls) == 50  # batches fill up under load
    s = w.stats()
    assert s["written"] == 230 and s["spooled"] == 0 and s["dropped"] == 0
    assert s["queue_depth"] == 0
    w.close()
    assert fake_store.closed


def test_partial_batch_goes_out_after_flush_interval(fake_store, tmp_path) -> None:
    w = writer_for(fake_store, tmp_path, batch_size=1000, flush_interval_s=0.05)
    w.submit_impressions([make_impression(1)])
    wait_for(lambda: len(fake_store.impressions) == 1, timeout=2)
    w.close()


def test_submit_never_blocks_on_a_slow_store(fake_store, tmp_path) -> None:
    fake_store.fail_with = lambda recs: time.sleep(0.5)  # type: ignore[func-returns-value]
    w = writer_for(fake_store, tmp_path, batch_size=10)
    t = time.perf_counter()
    for i in range(200):
        w.submit_impressions([make_impression(i)])
    assert time.perf_counter() - t < 0.2
    fake_store.fail_with = None
    w.close()


def test_outcome_counters_and_mixed_order(fake_store, tmp_path) -> None:
    w = writer_for(fake_store, tmp_path)
    w.submit_impressions([make_impression(1)])
    o = make_outcome("dec-000001")
    w.submit_outcomes([o, o, make_outcome("nope")])
    assert w.flush(5)
    s = w.stats()
    assert s["outcomes_duplicate"] == 1 and s["outcomes_unknown_decision"] == 1
    assert fake_store.order[0] == "dec-000001"  # the impression was written first
    w.close()


def test_outage_spools_and_replays_in_order(fake_store, tmp_path) -> None:
    w = writer_for(fake_store, tmp_path, batch_size=20)
    w.submit_impressions([make_impression(i) for i in range(30)])
    assert w.flush(5)
    fake_store.down = True
    for i in range(30, 130):
        w.submit_impressions([make_impression(i)])
    w.submit_outcomes([make_outcome("dec-000040")])
    assert w.flush(5)  # durable in the spool
    s = w.stats()
    assert s["spooled"] == 101 and s["spool_bytes"] > 0 and not s["store_up"]
    ok, msg = w.health()
    assert ok and "spooling" in msg
    spool_files = list((tmp_path / "spool").glob("spool-*.jsonl"))
    assert spool_files and sum(p.stat().st_size for p in spool_files) == s["spool_bytes"]
    assert len(fake_store.impressions) == 30

    # Records submitted while the spool drains must come after it.
    fake_store.down = False
    for i in range(130, 160):
        w.submit_impressions([make_impression(i)])
    wait_for(lambda: w.stats()["store_up"])  # the writer noticed with a ping
    assert w.flush(10)
    expected = (
        [f"dec-{i:06d}" for i in range(130)]
        + ["o:dec-000040"]
        + [f"dec-{i:06d}" for i in range(130, 160)]
    )
    assert fake_store.order == expected
    s = w.stats()
    assert s["replayed"] >= 101 and s["replayed"] + s["written"] == 161
    assert s["spool_bytes"] == 0 and s["dropped"] == 0 and s["store_up"]
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))
    assert w.health()[0]
    w.close()


def test_any_store_exception_spools(fake_store, tmp_path) -> None:
    fake_store.fail_with = lambda recs: RuntimeError("boom")
    w = writer_for(fake_store, tmp_path)
    w.submit_impressions([make_impression(i) for i in range(5)])
    assert w.flush(5)
    assert w.stats()["spooled"] == 5
    # The store answers pings but rejects every record: nothing is dead-lettered.
    assert w.flush(1)
    time.sleep(0.3)
    assert w.stats()["dead_lettered"] == 0 and w.stats()["spool_bytes"] > 0
    fake_store.fail_with = None
    wait_for(lambda: w.stats()["spool_bytes"] == 0)
    assert len(fake_store.impressions) == 5
    w.close()


def test_poison_record_is_dead_lettered(fake_store, tmp_path) -> None:
    def fail(recs):
        return (
            ValueError("bad record") if any(r.decision_id == "dec-000003" for r in recs) else None
        )

    fake_store.fail_with = fail
    w = writer_for(fake_store, tmp_path, batch_size=10)
    w.submit_impressions([make_impression(i) for i in range(10)])
    assert w.flush(10)
    wait_for(lambda: w.stats()["dead_lettered"] == 1)
    assert len(fake_store.impressions) == 9
    assert (tmp_path / "spool" / DEAD_LETTER_FILE).read_text().count("dec-000003") == 1
    wait_for(lambda: w.stats()["spool_bytes"] == 0)
    w.close()


def test_full_queue_and_full_spool_drop_loudly(fake_store, tmp_path, caplog) -> None:
    # Writer thread not started: the queue cannot drain.
    w = writer_for(fake_store, tmp_path, queue_size=10, spool_max_bytes=3_000, start=False)
    caplog.set_level(logging.ERROR, logger="keyart.adapters.decision_log.writer")
    assert w.submit_impressions([make_impression(i) for i in range(10)])  # fills the queue
    assert w.submit_impressions([make_impression(10)])  # overflow: spooled by the caller
    accepted = 1
    while w.submit_impressions([make_impression(100 + accepted)]):
        accepted += 1
        assert accepted < 100
    s = w.stats()
    assert s["queue_depth"] == 10
    assert s["overflow_spooled"] == accepted and s["dropped"] == 1
    for i in range(5):
        assert not w.submit_impressions([make_impression(500 + i)])
    assert w.stats()["dropped"] == 6
    ok, msg = w.health()
    assert not ok and "dropped 6" in msg
    assert any("DROPPING" in r.getMessage() for r in caplog.records)
    # Nothing accepted is lost: close drains the queue, then the spool.
    w.close()
    assert len(fake_store.impressions) == 10 + accepted


def test_a_queue_over_its_size_overflows_every_new_record(fake_store, tmp_path) -> None:
    # A batch the store refused goes back to the head of the queue even when the queue
    # filled meanwhile, so the depth can exceed queue_size: a page submitted then must
    # overflow whole (spooled here), not lose all but its last few records.
    w = writer_for(fake_store, tmp_path, queue_size=10, start=False)
    assert w.submit_impressions([make_impression(i) for i in range(10)])
    with w._cond:  # what _spool_or_keep does with a refused batch while the spool is full
        w._chunks.appendleft([make_impression(100 + i) for i in range(5)])
        w._depth += 5
    assert w.submit_impressions([make_impression(200 + i) for i in range(40)])
    s = w.stats()
    assert s["submitted"] == 50 and s["overflow_spooled"] == 40 and s["dropped"] == 0
    assert s["queue_depth"] == 15
    w.close()
    assert sorted(fake_store.impressions) == sorted(
        [f"dec-{i:06d}" for i in [*range(10), *range(100, 105), *range(200, 240)]])


def test_full_spool_keeps_records_queued_until_store_returns(fake_store, tmp_path) -> None:
    fake_store.down = True
    # One batch (10 lines of ~530 bytes) fits the spool; a batch larger than the whole
    # budget would be dropped instead of kept.
    w = writer_for(fake_store, tmp_path, queue_size=1000, batch_size=10, spool_max_bytes=6_000)
    for i in range(60):  # ~32 kB: far more than the spool holds
        assert w.submit_impressions([make_impression(i)])
    assert not w.flush(0.5)  # some records are only in memory: not durable yet
    s = w.stats()
    assert s["dropped"] == 0 and s["queue_depth"] > 0 and s["spool_bytes"] <= 6_000
    fake_store.down = False
    wait_for(lambda: len(fake_store.impressions) == 60)
    assert fake_store.order == [f"dec-{i:06d}" for i in range(60)]
    assert w.stats()["dropped"] == 0
    w.close()


def test_close_flushes(tmp_path) -> None:
    store = SqliteLogStore(tmp_path / "d.sqlite")
    w = writer_for(store, tmp_path, batch_size=1000, flush_interval_s=5.0, close_store=False)
    w.submit_impressions([make_impression(i) for i in range(300)])
    w.close()
    assert len(list(store.scan_impressions(T0, T0 + timedelta(hours=1)))) == 300
    # Submitting after close is not silent loss: it is spooled for the next run.
    assert w.submit_impressions([make_impression(999)])
    w2 = writer_for(store, tmp_path)
    assert w2.flush(5)
    assert len(list(store.scan_impressions(T0, T0 + timedelta(hours=1)))) == 301
    w2.close()


def test_close_with_store_down_leaves_spool_for_next_run(fake_store, tmp_path) -> None:
    fake_store.down = True
    w = writer_for(fake_store, tmp_path)
    w.submit_impressions([make_impression(i) for i in range(40)])
    w.close(timeout_s=2)
    assert w.stats()["spooled"] == 40
    fake_store.down = False
    store2 = FakeStore()
    w2 = writer_for(store2, tmp_path)
    w2.submit_impressions([make_impression(1000)])
    assert w2.flush(5)
    assert store2.order == [f"dec-{i:06d}" for i in range(40)] + ["dec-001000"]
    assert w2.stats()["replayed"] == 40
    w2.close()


def test_spool_segments_rotate_and_are_deleted(fake_store, tmp_path) -> None:
    fake_store.down = True
    w = writer_for(fake_store, tmp_path, batch_size=10, segment_bytes=2_000)
    for r in range(10):
        w.submit_impressions([make_impression(r * 10 + i) for i in range(10)])
        assert w.flush(5)  # one spool append (and fsync) per round
    assert len(list((tmp_path / "spool").glob("spool-*.jsonl"))) > 3
    fake_store.down = False
    assert w.flush(10)
    assert fake_store.order == [f"dec-{i:06d}" for i in range(100)]
    assert not list((tmp_path / "spool").glob("spool-*.jsonl"))
    w.close()


def test_torn_spool_tail_is_skipped(fake_store, tmp_path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    from keyart.adapters.decision_log.records import record_to_json

    good = record_to_json(make_impression(1)) + record_to_json(make_impression(2))
    (spool / "spool-0000000001.jsonl").write_bytes(good + b'{"_t":"i","decis')
    w = writer_for(fake_store, tmp_path)
    assert w.flush(5)
    assert fake_store.order == ["dec-000001", "dec-000002"]
    assert w.stats()["spool_corrupt"] == 1
    w.close()


@pytest.mark.parametrize("n", [1, 7])
def test_health_ok_when_idle(fake_store, tmp_path, n) -> None:
    w = writer_for(fake_store, tmp_path)
    w.submit_impressions([make_impression(i) for i in range(n)])
    assert w.flush(5)
    ok, msg = w.health()
    assert ok and msg.startswith("ok")
    w.close()


class _FullDiskConnection:
    """A real SQLite connection on a nearly full disk, while `full` is set: a COMMIT of a
    batch fails, having rolled back already (so ROLLBACK says no transaction is active),
    and of single records every other one fits (space freed and taken by others), as the
    writer's one-by-one retry of a failing batch finds."""

    def __init__(self, conn) -> None:
        self.conn, self.full, self.commits, self.rows = conn, True, 0, 0

    def execute(self, sql, *args):
        if sql.startswith("BEGIN"):
            self.rows = 0
        if self.full and sql == "COMMIT":
            self.commits += 1
            if self.rows > 1 or self.commits % 2:
                self.conn.execute("ROLLBACK")
                raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def executemany(self, sql, rows):
        rows = list(rows)
        self.rows += len(rows)
        return self.conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_full_disk_at_commit_spools_and_never_dead_letters(tmp_path) -> None:
    store = SqliteLogStore(tmp_path / "log.sqlite")
    disk = _FullDiskConnection(store._conn)
    store._conn = disk
    w = writer_for(store, tmp_path)
    ids = [make_impression(k).decision_id for k in range(120)]
    assert w.submit_impressions([make_impression(k) for k in range(120)])
    wait_for(lambda: w.stats()["spooled"] == 120 and disk.commits > 30)  # batches, then one by one
    s = w.stats()
    assert s["dead_lettered"] == 0 and s["dropped"] == 0 and s["store_errors"] > 0
    disk.full = False
    assert w.flush(10)
    stored = {i.decision_id for i in store.scan_impressions(T0 - timedelta(days=1), T0 + timedelta(days=30))}
    w.close()
    assert set(ids) <= stored
