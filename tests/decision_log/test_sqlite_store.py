from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta

import numpy as np
import pytest
from decision_log.dlog_helpers import T0, make_impression, make_outcome

from keyart.decision_log.sqlite_store import SqliteLogStore
from keyart.decision_log.store import LogStore, LogStoreUnavailable, OutcomeWriteResult
from keyart.domain import OutcomeKind


@pytest.fixture
def store(tmp_path):
    s = SqliteLogStore(tmp_path / "log" / "decisions.sqlite")
    yield s
    s.close()


def test_is_a_log_store_in_wal_mode(store, tmp_path) -> None:
    assert isinstance(store, LogStore)
    conn = sqlite3.connect(tmp_path / "log" / "decisions.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_round_trip_every_field(store) -> None:
    imps = [make_impression(i, features=(0.5, -2.0, 1e-3)) for i in range(5)]
    imps.append(make_impression(99, fallback_reason="timeout", features=()))
    store.write_impressions(imps)
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert [g.decision_id for g in got] == [i.decision_id for i in imps]
    for want, have in zip(imps, got):
        f32 = tuple(float(np.float32(x)) for x in want.features)
        assert have == want.__class__(**{**want.__dict__, "features": f32})
    assert got[-1].fallback_reason == "timeout" and got[-1].features == ()


def test_impression_writes_are_idempotent(store) -> None:
    imps = [make_impression(i) for i in range(10)]
    store.write_impressions(imps)
    store.write_impressions(imps)
    store.write_impressions([make_impression(3, image_id="img-new")])  # last write wins
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert len(got) == 10
    assert got[3].image_id == "img-new"


def test_scan_is_half_open_and_pages(store) -> None:
    imps = [make_impression(i, at=T0 + timedelta(milliseconds=i)) for i in range(2500)]
    store.write_impressions(imps)
    got = list(store.scan_impressions(T0, T0 + timedelta(milliseconds=2400)))
    assert len(got) == 2400
    assert [g.decision_id for g in got] == [i.decision_id for i in imps[:2400]]
    # Same timestamp for many rows: keyset paging on (time, id) must not skip any.
    same = [make_impression(10_000 + i, at=T0 + timedelta(hours=2)) for i in range(1500)]
    store.write_impressions(same)
    got = list(store.scan_impressions(T0 + timedelta(hours=2), T0 + timedelta(hours=3)))
    assert len(got) == 1500 and len({g.decision_id for g in got}) == 1500


def test_outcome_dedup_and_unknown_decision(store) -> None:
    store.write_impressions([make_impression(1)])
    known = make_outcome("dec-000001", OutcomeKind.PLAY_STARTED)
    progress = make_outcome("dec-000001", OutcomeKind.PLAYBACK_PROGRESS, 12.0)
    orphan = make_outcome("dec-unknown", OutcomeKind.PLAY_STARTED)
    r = store.write_outcomes([known, progress, known, orphan])
    assert r == OutcomeWriteResult(written=3, duplicates=1, unknown_decision=1)
    r2 = store.write_outcomes([known, orphan])
    assert r2 == OutcomeWriteResult(written=0, duplicates=2, unknown_decision=0)
    got = list(store.scan_outcomes(T0, T0 + timedelta(hours=1)))
    assert len(got) == 3
    assert {o.decision_id for o in got} == {"dec-000001", "dec-unknown"}
    assert store.count_unknown_outcomes() == 1
    # The impression arrives late: the outcome becomes attributable.
    store.write_impressions([make_impression(1, decision_id="dec-unknown")])
    assert store.count_unknown_outcomes() == 0


def test_recent_for_member_newest_first(store) -> None:
    store.write_impressions([make_impression(i, member="a") for i in range(20)])
    store.write_impressions([make_impression(100 + i, member="b") for i in range(3)])
    recent = store.recent_for_member("a", 5)
    assert [r.decision_id for r in recent] == [f"dec-{i:06d}" for i in (19, 18, 17, 16, 15)]
    assert store.recent_for_member("nobody", 5) == []
    assert store.recent_for_member("a", 0) == []


def test_concurrent_writers_and_readers(store) -> None:
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        try:
            for k in range(20):
                store.write_impressions([make_impression(base + k * 10 + j) for j in range(10)])
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(50):
                list(store.scan_impressions(T0, T0 + timedelta(days=1)))
                store.recent_for_member("m1", 10)
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (0, 10_000, 20_000)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(store.scan_impressions(T0, T0 + timedelta(days=1)))) == 600


def test_closed_store_is_unavailable(tmp_path) -> None:
    s = SqliteLogStore(tmp_path / "x.sqlite")
    s.ping()
    s.close()
    with pytest.raises(LogStoreUnavailable):
        s.ping()
    with pytest.raises(LogStoreUnavailable):
        s.write_impressions([make_impression(1)])


def test_reopen_keeps_data(tmp_path) -> None:
    s = SqliteLogStore(tmp_path / "x.sqlite")
    s.write_impressions([make_impression(1)])
    s.close()
    s2 = SqliteLogStore(tmp_path / "x.sqlite")
    assert [i.decision_id for i in s2.recent_for_member("m1", 10)] == ["dec-000001"]
    s2.close()
