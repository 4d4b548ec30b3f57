from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta

import pytest
from adapters.decision_log.dlog_helpers import (
    T0,
    check_unknown_outcomes_bounded,
    f32,
    make_impression,
    make_outcome,
)

from keyart.adapters.decision_log.sqlite import WAL_AUTOCHECKPOINT_PAGES, SqliteLogStore
from keyart.adapters.decision_log.store import LogStore, LogStoreUnavailable, OutcomeWriteResult
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
    # the writer's own connection checkpoints less often than SQLite's 1,000 pages
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT_PAGES > 1000


def test_round_trip_every_field(store) -> None:
    imps = [make_impression(i, features=f32(0.5, -2.0, 1e-3)) for i in range(5)]
    imps.append(make_impression(99, fallback_reason="timeout", features=b""))
    store.write_impressions(imps)
    got = list(store.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert [g.decision_id for g in got] == [i.decision_id for i in imps]
    assert got == imps  # the feature rows byte for byte
    assert got[-1].fallback_reason == "timeout" and got[-1].features == b""


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


# The impressions table as created before actor_affinity existed (outcomes unchanged).
_OLD_DDL = """
CREATE TABLE impressions (
    decision_id     TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    member_id       TEXT NOT NULL,
    title_id        TEXT NOT NULL,
    image_id        TEXT NOT NULL,
    lineage_id      TEXT NOT NULL,
    propensity      REAL NOT NULL,
    score           REAL NOT NULL,
    explored        INTEGER NOT NULL,
    policy          TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    position        INTEGER NOT NULL,
    country         TEXT NOT NULL,
    language        TEXT NOT NULL,
    device          TEXT NOT NULL,
    surface         TEXT NOT NULL,
    decided_at_us   INTEGER NOT NULL,
    fallback_reason TEXT NOT NULL,
    feature_schema  TEXT NOT NULL,
    features        BLOB NOT NULL
);
CREATE INDEX impressions_by_time ON impressions (decided_at_us, decision_id);
CREATE INDEX impressions_by_member ON impressions (member_id, decided_at_us);
CREATE TABLE outcomes (
    outcome_key     TEXT PRIMARY KEY,
    decision_id     TEXT NOT NULL,
    member_id       TEXT NOT NULL,
    title_id        TEXT NOT NULL,
    image_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    minutes_played  REAL NOT NULL,
    event_time_us   INTEGER NOT NULL,
    decision_known  INTEGER NOT NULL
);
"""


def _old_log(path) -> None:
    """A decisions.sqlite as the previous version left it, with one impression."""
    from keyart.adapters.decision_log.records import encode_features, to_micros

    imp = make_impression(1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_OLD_DDL)
    conn.execute(
        "INSERT INTO impressions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (imp.decision_id, imp.request_id, imp.member_id, imp.title_id, imp.image_id,
         imp.lineage_id, imp.propensity, imp.score, int(imp.explored), imp.policy,
         imp.model_version, imp.position, imp.country, imp.language, imp.device, imp.surface,
         to_micros(imp.decided_at), imp.fallback_reason, imp.feature_schema,
         encode_features(imp.features)),
    )  # fmt: skip
    conn.commit()
    conn.close()


def _columns(path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[1] for r in conn.execute("PRAGMA table_info(impressions)")]
    finally:
        conn.close()


def test_actor_affinity_round_trip(store) -> None:
    actors = (("nm0000123", 0.8125), ("nm0000456", 1 / 3), ("Zoë", 0.0))
    imps = [make_impression(1, actor_affinity=actors), make_impression(2, actor_affinity=())]
    store.write_impressions(imps)
    got = {g.decision_id: g for g in store.scan_impressions(T0, T0 + timedelta(hours=1))}
    assert got["dec-000001"].actor_affinity == actors  # JSON text: exact, order kept
    assert got["dec-000002"].actor_affinity == ()
    assert store.recent_for_member("m1", 1)[0].actor_affinity == ()
    inline, raw = store._conn.execute(
        "SELECT i.actor_affinity, a.actors FROM impressions i JOIN actor_sets a ON a.digest = i.actor_set "
        "WHERE decision_id = 'dec-000001'"
    ).fetchone()
    # Compact, ASCII-only JSON (always encodable, whatever the names hold), stored once by digest.
    assert inline == "" and raw == '[["nm0000123",0.8125],["nm0000456",0.3333333333333333],["Zo\\u00eb",0.0]]'


def test_a_pages_actors_are_stored_once_and_rows_without_them_stay_inline(store) -> None:
    """40 impressions of one member's page keep one copy of the actors; a second page of
    the same member adds none; a row with no actors names no set."""
    actors = (("nm1", 0.5), ("nm2", 0.25))
    page = [make_impression(k, actor_affinity=actors) for k in range(1, 41)]
    store.write_impressions(page)
    store.write_impressions([make_impression(k, actor_affinity=tuple(actors)) for k in range(41, 81)])
    store.write_impressions([make_impression(81, actor_affinity=())])
    assert store._conn.execute("SELECT COUNT(*) FROM actor_sets").fetchone()[0] == 1
    assert store._conn.execute(
        "SELECT actor_affinity, actor_set FROM impressions WHERE decision_id = 'dec-000081'").fetchone() == ("[]", "")
    got = {g.decision_id: g.actor_affinity for g in store.scan_impressions(T0, T0 + timedelta(hours=1))}
    assert len(got) == 81 and got["dec-000081"] == ()
    assert all(got[f"dec-{k:06d}"] == actors for k in range(1, 81))
    assert [i.actor_affinity for i in store.recent_for_member("m1", 3)] == [(), actors, actors]


def test_old_schema_file_gains_the_column_and_keeps_working(tmp_path) -> None:
    path = tmp_path / "decisions.sqlite"
    _old_log(path)
    assert "actor_affinity" not in _columns(path)
    s = SqliteLogStore(path)
    assert _columns(path)[-6:] == ["actor_affinity", "experiment", "cell", "shadows", "latency_ms", "actor_set"]
    # The old row reads back with no actors; new rows keep theirs; outcomes still attach.
    old = list(s.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert [(i.decision_id, i.actor_affinity) for i in old] == [("dec-000001", ())]
    assert old[0].features == make_impression(1).features
    s.write_impressions([make_impression(2), make_impression(3, actor_affinity=(("a", 0.25),))])
    assert s.write_outcomes([make_outcome("dec-000001")]) == OutcomeWriteResult(1, 0, 0)
    got = list(s.scan_impressions(T0, T0 + timedelta(hours=1)))
    assert [i.actor_affinity for i in got] == [
        (),
        make_impression(2).actor_affinity,
        (("a", 0.25),),
    ]
    s.close()
    # Opening again is a no-op (the column is there), data intact.
    s2 = SqliteLogStore(path)
    assert _columns(path).count("actor_affinity") == 1
    assert len(list(s2.scan_impressions(T0, T0 + timedelta(hours=1)))) == 3
    s2.close()


def test_old_schema_file_opened_by_several_stores_at_once(tmp_path) -> None:
    path = tmp_path / "decisions.sqlite"
    _old_log(path)
    barrier = threading.Barrier(4)
    stores: list[SqliteLogStore] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait(10)
        try:
            stores.append(SqliteLogStore(path))
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _columns(path).count("actor_affinity") == 1
    for k, s in enumerate(stores):
        s.write_impressions([make_impression(10 + k)])
    assert len(list(stores[0].scan_impressions(T0, T0 + timedelta(hours=1)))) == 5
    for s in stores:
        s.close()



def test_outcomes_of_an_unknown_decision_are_bounded(tmp_path) -> None:
    s = SqliteLogStore(tmp_path / "log.sqlite")
    check_unknown_outcomes_bounded(s)
    s.close()
