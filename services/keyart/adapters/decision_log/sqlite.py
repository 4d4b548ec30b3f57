"""Embedded decision log: one SQLite file in WAL mode, same semantics as Cassandra.

One connection shared by every thread behind a lock (the writer thread writes, request
threads read ``recent_for_member``, the export scans). Scans page with a keyset
(time, id) and release the lock between pages, so a long export does not stall writes.
Timestamps are stored as integer UTC microseconds, features as float32 blobs, the
member's actor affinities as compact JSON text ``[["actor", weight], ...]``.
``synchronous=NORMAL`` in WAL mode survives a process crash; a power loss may lose the
last transactions (the writer's spool is fsync'd, the store is not per batch).

Several processes may open the same file (replicas on one machine): WAL lets readers
run beside the one writer, every write transaction is ``BEGIN IMMEDIATE`` (takes the
write lock up front, so a read-then-write transaction never fails half way with
SQLITE_BUSY on lock upgrade) and waits up to ``busy_timeout_s`` for it; a wait that
times out raises LogStoreUnavailable and the writer spools and retries.

Schema changes: columns added after a file may have been created are listed in
``_ADDED_COLUMNS``; opening a file adds the missing ones (``ALTER TABLE ... ADD
COLUMN`` under the write lock), so a log written by an older version keeps working
and its old rows read back with the column's default.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from keyart.adapters.decision_log.records import (
    decode_actors,
    decode_shadows,
    encode_actors,
    encode_features,
    encode_shadows,
    feature_row,
    from_micros,
    outcome_key,
    to_micros,
)
from keyart.adapters.decision_log.store import (
    MAX_OUTCOMES_PER_UNKNOWN_DECISION,
    LogStoreUnavailable,
    OutcomeWriteResult,
)
from keyart.domain import Impression, Outcome, OutcomeKind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (
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
    features        BLOB NOT NULL,
    actor_affinity  TEXT NOT NULL DEFAULT '[]',
    experiment      TEXT NOT NULL DEFAULT '',
    cell            TEXT NOT NULL DEFAULT '',
    shadows         TEXT NOT NULL DEFAULT '[]',
    latency_ms      REAL NOT NULL DEFAULT 0,
    actor_set       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (decided_at_us, decision_id);
CREATE INDEX IF NOT EXISTS impressions_by_member ON impressions (member_id, decided_at_us);
CREATE TABLE IF NOT EXISTS outcomes (
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
CREATE INDEX IF NOT EXISTS outcomes_by_time ON outcomes (event_time_us, outcome_key);
CREATE INDEX IF NOT EXISTS outcomes_by_decision ON outcomes (decision_id);
CREATE INDEX IF NOT EXISTS outcomes_unknown ON outcomes (decision_id) WHERE decision_known = 0;
CREATE TABLE IF NOT EXISTS actor_sets (
    digest          TEXT PRIMARY KEY,
    actors          TEXT NOT NULL
);
"""

# Columns added to existing tables since the first release: (table, column, definition).
# _SCHEMA creates new files with them; opening an older file adds the missing ones.
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("impressions", "actor_affinity", "TEXT NOT NULL DEFAULT '[]'"),
    ("impressions", "experiment", "TEXT NOT NULL DEFAULT ''"),
    ("impressions", "cell", "TEXT NOT NULL DEFAULT ''"),
    ("impressions", "shadows", "TEXT NOT NULL DEFAULT '[]'"),
    ("impressions", "latency_ms", "REAL NOT NULL DEFAULT 0"),
    ("impressions", "actor_set", "TEXT NOT NULL DEFAULT ''"),
)

_IMPRESSION_COLUMNS = (
    "decision_id, request_id, member_id, title_id, image_id, lineage_id, propensity, score, "
    "explored, policy, model_version, position, country, language, device, surface, "
    "decided_at_us, fallback_reason, feature_schema, features, actor_affinity, experiment, cell, shadows, latency_ms"
)
# A page's 40 impressions share one member's top actors (~600 bytes of JSON, 60% of a
# row): rows written since `actor_set` existed name them by digest in `actor_sets`, stored
# once, and leave `actor_affinity` empty; older rows hold their text inline. Reads take
# whichever the row has, so both kinds come back alike.
_SELECT_IMPRESSIONS = (
    "SELECT " + _IMPRESSION_COLUMNS.replace("actor_affinity", "COALESCE(a.actors, i.actor_affinity)")
    + " FROM impressions i LEFT JOIN actor_sets a ON a.digest = i.actor_set"
)
_INSERT_ACTOR_SET = "INSERT OR IGNORE INTO actor_sets (digest, actors) VALUES (?, ?)"
_WRITTEN_COLUMNS = _IMPRESSION_COLUMNS + ", actor_set"
_UPSERT_IMPRESSION = (
    f"INSERT INTO impressions ({_WRITTEN_COLUMNS}) VALUES "
    f"({', '.join('?' * len(_WRITTEN_COLUMNS.split(',')))}) "
    "ON CONFLICT(decision_id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in _WRITTEN_COLUMNS.split(",")[1:])
)
_INSERT_OUTCOME = (
    "INSERT OR IGNORE INTO outcomes (outcome_key, decision_id, member_id, title_id, image_id, "
    "kind, minutes_played, event_time_us, decision_known) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PAGE = 1000
WAL_AUTOCHECKPOINT_PAGES = 4000
_IN_CHUNK = 500  # below SQLite's host-parameter limit


def _actor_set(actors: tuple[tuple[str, float], ...], sets: dict[str, str]) -> tuple[str, str]:
    """(inline text, digest) of a member's actors: none inline as "[]", others by digest,
    their text added to `sets` (digest -> text) for `actor_sets`."""
    encoded = encode_actors(actors)
    if encoded == "[]":
        return encoded, ""
    digest = hashlib.blake2b(encoded.encode("ascii"), digest_size=16).hexdigest()
    sets[digest] = encoded
    return "", digest


def _impression_row(imp: Impression, memo: dict[int, Any], sets: dict[str, str]) -> tuple[Any, ...]:
    """The written row of an impression. `memo` holds, by identity, what a page's 40
    impressions share as one object: the member's actor tuple as (text, digest) and the
    decision time as microseconds, converted once a page (a third of the row building)."""
    key = id(imp.actor_affinity)
    actors = memo.get(key)
    if actors is None:
        actors = memo[key] = _actor_set(imp.actor_affinity, sets)
    at = imp.decided_at
    micros = memo.get(id(at))
    if micros is None:
        micros = memo[id(at)] = to_micros(at)
    features = imp.features
    if type(features) is not bytes or len(features) % 4:  # a FeatureRow (the usual case) is stored as it is
        features = encode_features(features)
    return (
        imp.decision_id,
        imp.request_id,
        imp.member_id,
        imp.title_id,
        imp.image_id,
        imp.lineage_id,
        float(imp.propensity),
        float(imp.score),
        int(bool(imp.explored)),
        imp.policy,
        imp.model_version,
        int(imp.position),
        imp.country,
        imp.language,
        imp.device,
        imp.surface,
        micros,
        imp.fallback_reason,
        imp.feature_schema,
        features,
        actors[0],
        imp.experiment,
        imp.cell,
        encode_shadows(imp.shadows),
        float(imp.latency_ms),
        actors[1],
    )


def _impression_from_row(row: tuple[Any, ...]) -> Impression:
    return Impression(
        decision_id=row[0],
        request_id=row[1],
        member_id=row[2],
        title_id=row[3],
        image_id=row[4],
        lineage_id=row[5],
        propensity=row[6],
        score=row[7],
        explored=bool(row[8]),
        policy=row[9],
        model_version=row[10],
        position=row[11],
        country=row[12],
        language=row[13],
        device=row[14],
        surface=row[15],
        decided_at=from_micros(row[16]),
        fallback_reason=row[17],
        feature_schema=row[18],
        features=feature_row(row[19]),
        actor_affinity=decode_actors(row[20]),
        experiment=row[21],
        cell=row[22],
        shadows=decode_shadows(row[23]),
        latency_ms=row[24],
    )


class SqliteLogStore:
    """:class:`~keyart.adapters.decision_log.store.LogStore` on one SQLite file (WAL)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
            )
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self._set_wal(busy_timeout_s)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint the WAL every 4,000 pages (16 MB), not SQLite's 1,000: a page's rows
            # touch the same index pages again, each checkpoint copies a page once, and its
            # fsync is paid a quarter as often (-5% of the writer's CPU per page, measured
            # over 5,000 pages against the default, 3 alternated rounds).
            self._conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.Error as exc:
            raise LogStoreUnavailable(f"cannot open decision log {path}: {exc}") from exc

    def _set_wal(self, timeout_s: float) -> None:
        """Switch to WAL, retrying: switching ignores busy_timeout, and several processes
        opening a new file at once get "database is locked" from all but one."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _add_missing_columns(self) -> None:
        """Bring a file created by an older version up to the current columns.

        Checked and altered inside one BEGIN IMMEDIATE transaction, so two processes
        opening the same old file at once do not both add the column.
        """
        conn = self._conn
        if all(self._has_column(table, column) for table, column, _ in _ADDED_COLUMNS):
            return  # the usual case: no write lock taken
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, column, definition in _ADDED_COLUMNS:
                if not self._has_column(table, column):
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _has_column(self, table: str, column: str) -> bool:
        rows = self._conn.execute(f"PRAGMA table_info({table})").fetchall()
        return any(r[1] == column for r in rows)

    # --- writes -------------------------------------------------------------------------

    def write_impressions(self, impressions: list[Impression]) -> None:
        if not impressions:
            return
        memo: dict[int, Any] = {}  # ids stay valid: `impressions` holds every object alive meanwhile
        sets: dict[str, str] = {}
        rows = [_impression_row(imp, memo, sets) for imp in impressions]
        with self._transaction() as conn:
            conn.executemany(_INSERT_ACTOR_SET, sets.items())
            conn.executemany(_UPSERT_IMPRESSION, rows)
            # Outcomes that arrived before their impression become known: found through the
            # partial index of unknown outcomes (usually none), not one UPDATE per decision.
            early = self._unknown_outcome_decisions(conn, [imp.decision_id for imp in impressions])
            if early:
                conn.executemany(
                    "UPDATE outcomes SET decision_known = 1 WHERE decision_id = ? AND decision_known = 0",
                    [(d,) for d in early],
                )

    def write_outcomes(self, outcomes: list[Outcome]) -> OutcomeWriteResult:
        if not outcomes:
            return OutcomeWriteResult()
        written = duplicates = unknown = refused = 0
        with self._transaction() as conn:
            known = self._known_decisions(conn, {o.decision_id for o in outcomes})
            held = self._unknown_outcome_counts(conn, [d for d in {o.decision_id for o in outcomes} if d not in known])
            for o in outcomes:
                is_known = o.decision_id in known
                if not is_known and held.get(o.decision_id, 0) >= MAX_OUTCOMES_PER_UNKNOWN_DECISION:
                    refused += 1
                    continue
                cur = conn.execute(
                    _INSERT_OUTCOME,
                    (
                        outcome_key(o),
                        o.decision_id,
                        o.member_id,
                        o.title_id,
                        o.image_id,
                        OutcomeKind(o.kind).value,
                        float(o.minutes_played),
                        to_micros(o.event_time),
                        int(is_known),
                    ),
                )
                if cur.rowcount == 1:
                    written += 1
                    if not is_known:
                        unknown += 1
                        held[o.decision_id] = held.get(o.decision_id, 0) + 1
                else:
                    duplicates += 1
        return OutcomeWriteResult(written, duplicates, unknown, refused)

    @staticmethod
    def _unknown_outcome_counts(conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
        """Outcomes already held for each of these (unknown) decision ids."""
        counts: dict[str, int] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            counts.update((d, int(n)) for d, n in conn.execute(
                f"SELECT decision_id, COUNT(*) FROM outcomes WHERE decision_id IN ({marks}) GROUP BY decision_id",
                chunk))
        return counts

    @staticmethod
    def _unknown_outcome_decisions(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        """The ids among `ids` that outcomes logged as unknown decisions point to."""
        found: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in conn.execute(
                f"SELECT decision_id FROM outcomes WHERE decision_known = 0 AND decision_id IN ({marks})", chunk))
        return found

    @staticmethod
    def _known_decisions(conn: sqlite3.Connection, ids: set[str]) -> set[str]:
        found: set[str] = set()
        id_list = list(ids)
        for start in range(0, len(id_list), _IN_CHUNK):
            chunk = id_list[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in conn.execute(
                    f"SELECT decision_id FROM impressions WHERE decision_id IN ({marks})", chunk
                )
            )
        return found

    # --- reads --------------------------------------------------------------------------

    def scan_impressions(self, since: datetime, until: datetime) -> Iterator[Impression]:
        lo, hi = to_micros(since), to_micros(until)
        cursor_t, cursor_id = lo - 1, ""
        while True:
            with self._guard():
                rows = self._conn.execute(
                    f"{_SELECT_IMPRESSIONS} "
                    "WHERE decided_at_us < ? AND (decided_at_us > ? OR "
                    "(decided_at_us = ? AND decision_id > ?)) AND decided_at_us >= ? "
                    "ORDER BY decided_at_us, decision_id LIMIT ?",
                    (hi, cursor_t, cursor_t, cursor_id, lo, _PAGE),
                ).fetchall()
            for row in rows:
                yield _impression_from_row(row)
            if len(rows) < _PAGE:
                return
            cursor_t, cursor_id = rows[-1][16], rows[-1][0]

    def scan_outcomes(self, since: datetime, until: datetime) -> Iterator[Outcome]:
        lo, hi = to_micros(since), to_micros(until)
        cursor_t, cursor_key = lo - 1, ""
        while True:
            with self._guard():
                rows = self._conn.execute(
                    "SELECT outcome_key, decision_id, member_id, title_id, image_id, kind, "
                    "minutes_played, event_time_us FROM outcomes "
                    "WHERE event_time_us < ? AND (event_time_us > ? OR "
                    "(event_time_us = ? AND outcome_key > ?)) AND event_time_us >= ? "
                    "ORDER BY event_time_us, outcome_key LIMIT ?",
                    (hi, cursor_t, cursor_t, cursor_key, lo, _PAGE),
                ).fetchall()
            for row in rows:
                yield Outcome(
                    decision_id=row[1],
                    member_id=row[2],
                    title_id=row[3],
                    image_id=row[4],
                    kind=OutcomeKind(row[5]),
                    minutes_played=row[6],
                    event_time=from_micros(row[7]),
                )
            if len(rows) < _PAGE:
                return
            cursor_t, cursor_key = rows[-1][7], rows[-1][0]

    def recent_for_member(self, member_id: str, limit: int) -> list[Impression]:
        if limit <= 0:
            return []
        with self._guard():
            rows = self._conn.execute(
                f"{_SELECT_IMPRESSIONS} WHERE member_id = ? "
                "ORDER BY decided_at_us DESC, decision_id DESC LIMIT ?",
                (member_id, int(limit)),
            ).fetchall()
        return [_impression_from_row(r) for r in rows]

    def count_unknown_outcomes(self) -> int:
        """Outcomes whose decision is still not in the log (for reconciliation)."""
        with self._guard():
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM outcomes WHERE decision_known = 0"
                ).fetchone()[0]
            )

    def counts(self) -> dict[str, Any]:
        """Totals for ``keyart log stats``: rows, unknown-decision outcomes, time span."""
        with self._guard():
            c = self._conn
            imps, lo, hi = c.execute(
                "SELECT COUNT(*), MIN(decided_at_us), MAX(decided_at_us) FROM impressions"
            ).fetchone()
            outs = c.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]
            unknown = c.execute("SELECT COUNT(*) FROM outcomes WHERE decision_known = 0").fetchone()[0]
            mode = c.execute("PRAGMA journal_mode").fetchone()[0]
        return {
            "impressions": int(imps),
            "outcomes": int(outs),
            "outcomes_unknown_decision": int(unknown),
            "first_decided_at": from_micros(lo).isoformat() if lo is not None else None,
            "last_decided_at": from_micros(hi).isoformat() if hi is not None else None,
            "journal_mode": str(mode),
        }

    # --- lifecycle ----------------------------------------------------------------------

    def ping(self) -> None:
        with self._guard():
            self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass

    # --- helpers ------------------------------------------------------------------------

    def _guard(self) -> _Guard:
        return _Guard(self, transaction=False)

    def _transaction(self) -> _Guard:
        return _Guard(self, transaction=True)


class _Guard:
    """Holds the store lock; maps operational SQLite errors to LogStoreUnavailable."""

    def __init__(self, store: SqliteLogStore, transaction: bool) -> None:
        self._store = store
        self._tx = transaction

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        if self._store._closed:
            self._store._lock.release()
            raise LogStoreUnavailable("decision log store is closed")
        try:
            if self._tx:
                self._store._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._store._lock.release()
            raise LogStoreUnavailable(f"sqlite: {exc}") from exc
        except BaseException:
            self._store._lock.release()
            raise
        return self._store._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._store._conn
        try:
            if self._tx:
                if exc_type is None:
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.OperationalError as err:
                        # A COMMIT that failed (disk full, I/O error) may have rolled back
                        # already, and ROLLBACK then raises "no transaction is active": the
                        # store is unavailable either way, never "these records are bad"
                        # (which would dead-letter good records).
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                        raise LogStoreUnavailable(f"sqlite: {err}") from err
                else:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
        finally:
            self._store._lock.release()
        if isinstance(exc, sqlite3.OperationalError):
            # locked, disk full, I/O error: the backend cannot take writes now.
            raise LogStoreUnavailable(f"sqlite: {exc}") from exc


__all__ = ["SqliteLogStore"]
