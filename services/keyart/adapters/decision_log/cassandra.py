"""Cassandra backend of the decision log (cassandra-driver).

Length (~700 lines): one store class whose prepared statements, bounded async
writes, multi-partition time scans and connection handling share one session;
the schema migration and the settings-to-Cluster wiring sit beside it because
they read the same statement table. Splitting migrate/connect into their own
module is a reasonable follow-up.

Routing: TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc)); every statement is
prepared once per session, carries the configured consistency (default LOCAL_QUORUM)
and ``is_idempotent=True`` (all writes are upserts keyed by decision_id or by the
outcome key, so the driver may retry them on timeouts). Writes go out with
``execute_async`` under a bound on requests in flight.

The store never builds a driver session by itself in tests: it takes either a ready
``session`` or a ``session_factory`` (called lazily, on first use and again after a
failed connect), so a fake session object can stand in. ``from_settings`` builds the
real Cluster.

Driver errors that mean "cannot reach enough replicas now" (NoHostAvailable,
timeouts, Unavailable, connection errors) become
:class:`~keyart.adapters.decision_log.store.LogStoreUnavailable`; anything else (an invalid
query, a missing keyspace) is raised as is.

Duplicate counting of outcomes reads the decision's stored outcome keys before
writing; under concurrent writers of the same outcome the count is best effort, but
the data is not: the write is an upsert on the same primary key.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from keyart.adapters.decision_log.records import (
    DEFAULT_SHARDS,
    as_utc,
    decode_shadows,
    encode_features,
    encode_shadows,
    feature_row,
    hour_bucket,
    hour_buckets,
    normalize_actors,
    outcome_key,
    shard_of,
)
from keyart.adapters.decision_log.store import (
    MAX_OUTCOMES_PER_UNKNOWN_DECISION,
    LogStoreUnavailable,
    OutcomeWriteResult,
)
from keyart.domain import Impression, Outcome, OutcomeKind

if TYPE_CHECKING:  # pragma: no cover
    from keyart.settings import KeyartSettings

log = logging.getLogger(__name__)

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

_IMPRESSION_FIELDS = (
    "decision_id",
    "request_id",
    "member_id",
    "title_id",
    "image_id",
    "lineage_id",
    "propensity",
    "score",
    "explored",
    "policy",
    "model_version",
    "position",
    "country",
    "language",
    "device",
    "surface",
    "decided_at",
    "fallback_reason",
    "feature_schema",
    "features",
)
# Impression.actor_affinity as two parallel frozen lists (added by ALTER TABLE on
# keyspaces created before; rows written before read back as null: no actors).
_ACTOR_COLUMNS = ("top_actors", "top_actor_weights")
# The online experiment, its shadows' choices (JSON text) and the page latency; added
# by ALTER TABLE like the actor columns (older rows read back as null: none).
_EXPERIMENT_COLUMNS = ("experiment", "cell", "shadows", "latency_ms")
_IMPRESSION_COLUMNS = _IMPRESSION_FIELDS + _ACTOR_COLUMNS + _EXPERIMENT_COLUMNS
_OUTCOME_FIELDS = (
    "decision_id",
    "kind",
    "event_time",
    "outcome_key",
    "member_id",
    "title_id",
    "image_id",
    "minutes_played",
    "decision_known",
)


# --- schema -----------------------------------------------------------------------------


def schema_text() -> str:
    """The raw schema.cql shipped with the package."""
    return resources.files("keyart.adapters.decision_log").joinpath("schema.cql").read_text("utf-8")


def replication_cql(replication: Mapping[str, Any] | str | None) -> str:
    """A CQL replication map; None means SimpleStrategy RF 1 (development only)."""
    if replication is None:
        replication = {"class": "SimpleStrategy", "replication_factor": 1}
    if isinstance(replication, str):
        return replication
    parts = []
    for key, value in replication.items():
        parts.append(f"'{key}': " + (f"{value}" if isinstance(value, int) else f"'{value}'"))
    return "{" + ", ".join(parts) + "}"


def render_schema(
    keyspace: str, replication: Mapping[str, Any] | str | None = None, ttl: int = 0
) -> list[str]:
    """The schema statements with placeholders filled, in order, without comments."""
    if not _KEYSPACE_RE.match(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    if int(ttl) < 0:
        raise ValueError("ttl must be >= 0")
    lines = [ln for ln in schema_text().splitlines() if not ln.lstrip().startswith("--")]
    text = (
        "\n".join(lines)
        .replace("{keyspace}", keyspace)
        .replace("{replication}", replication_cql(replication))
        .replace("{ttl}", str(int(ttl)))
    )
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


_ADD_COLUMN_RE = re.compile(r"^ALTER\s+TABLE\s+\S+\s+ADD\s", re.IGNORECASE)
# What Cassandra answers to ADD of a column the table already has: 3.x / 4.0 say
# "Invalid column name x because it conflicts with an existing column", 4.1+ say
# "Column with name 'x' already exists".
_COLUMN_EXISTS = ("conflicts with an existing column", "already exists")


def migrate(
    session: Any,
    keyspace: str,
    replication: Mapping[str, Any] | str | None = None,
    ttl: int = 0,
) -> list[str]:
    """Apply schema.cql; re-running it is a no-op.

    CREATE statements are IF NOT EXISTS; the ``ALTER TABLE ... ADD`` statements at
    the end add columns introduced since the first release to tables created
    before, and are skipped when the column is already there (InvalidRequest
    "conflicts with an existing column" / "already exists"; plain ADD, because
    ADD IF NOT EXISTS needs Cassandra 4.1+). Nothing else of an existing table is
    altered: a changed TTL needs an ALTER TABLE by an operator. Returns the
    statements executed.
    """
    from cassandra import InvalidRequest

    statements = render_schema(keyspace, replication, ttl)
    for stmt in statements:
        if not _ADD_COLUMN_RE.match(stmt):
            session.execute(stmt)
            continue
        try:
            session.execute(stmt)
        except InvalidRequest as exc:
            if not any(marker in str(exc) for marker in _COLUMN_EXISTS):
                raise
            log.debug("column already present: %s", stmt)
    return statements


# --- errors -----------------------------------------------------------------------------


def _unavailable_types() -> tuple[type[BaseException], ...]:
    from cassandra import (
        CoordinationFailure,
        OperationTimedOut,
        ReadTimeout,
        Unavailable,
        WriteTimeout,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (
        NoHostAvailable,
        OperationTimedOut,
        Unavailable,
        ReadTimeout,
        WriteTimeout,
        CoordinationFailure,
        ConnectionException,
        OSError,
    )


_UNAVAILABLE = _unavailable_types()

# Hour buckets one time-range query may cover (x shards partitions: 192 with 8). Cassandra's
# guardrails partition_keys_in_select / in_select_cartesian_product are off by default; a
# cluster that sets them needs a fail threshold above this product.
_SCAN_MAX_BUCKETS = 24


# Levels the driver knows but the log cannot use for every statement: one level serves
# its plain writes and its reads (write_outcomes reads before writing). Found on a real
# node: Cassandra refuses a plain write at SERIAL/LOCAL_SERIAL and any read at ANY
# (InvalidRequest, which the writer would dead-letter record by record), so they are
# refused when the store is built rather than on the first batch.
_UNUSABLE_LEVELS = {
    "SERIAL": "is for lightweight transactions (a plain write is refused)",
    "LOCAL_SERIAL": "is for lightweight transactions (a plain write is refused)",
    "ANY": "is write-only (reads are refused; outcome writes read first)",
}


def _consistency_value(name: str) -> int:
    from cassandra import ConsistencyLevel

    level = name.strip().upper()
    if level in _UNUSABLE_LEVELS:
        raise ValueError(
            f"consistency level {level} {_UNUSABLE_LEVELS[level]}; the decision log needs a level "
            "valid for reads and writes: LOCAL_QUORUM (default), QUORUM, LOCAL_ONE, ONE, ..."
        )
    try:
        return ConsistencyLevel.name_to_value[level]
    except KeyError:
        raise ValueError(f"unknown Cassandra consistency level {name!r}") from None


# --- the store --------------------------------------------------------------------------


class CassandraLogStore:
    """:class:`~keyart.adapters.decision_log.store.LogStore` on Cassandra."""

    def __init__(
        self,
        session: Any | None = None,
        *,
        session_factory: Callable[[], Any] | None = None,
        keyspace: str = "keyart",
        consistency: str = "LOCAL_QUORUM",
        shards: int = DEFAULT_SHARDS,
        max_in_flight: int = 128,
        fetch_size: int = 1000,
        migrate_on_connect: bool = False,
        replication: Mapping[str, Any] | str | None = None,
        ttl: int = 0,
    ) -> None:
        if session is None and session_factory is None:
            raise ValueError("give a session or a session_factory")
        if not _KEYSPACE_RE.match(keyspace):
            raise ValueError(f"invalid keyspace name {keyspace!r}")
        self.keyspace = keyspace
        self.consistency = consistency.upper()
        self._cl = _consistency_value(consistency)
        self.shards = int(shards)
        self.max_in_flight = max(1, int(max_in_flight))
        self.fetch_size = int(fetch_size)
        self._factory = session_factory
        self._session = session
        self._stmts: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._migrate = migrate_on_connect
        self._replication = replication
        self._ttl = ttl

    @classmethod
    def from_settings(cls, settings: KeyartSettings, **kwargs: Any) -> CassandraLogStore:
        """A store on a real Cluster built from settings (connects lazily)."""
        return cls(
            session_factory=lambda: connect_session(settings),
            keyspace=settings.cassandra_keyspace,
            consistency=settings.cassandra_consistency,
            **kwargs,
        )

    # --- session and statements -------------------------------------------------------

    def _ready(self) -> tuple[Any, dict[str, Any]]:
        with self._lock:
            if self._closed:
                raise LogStoreUnavailable("decision log store is closed")
            if self._session is None:
                assert self._factory is not None
                try:
                    self._session = self._factory()
                except _UNAVAILABLE as exc:
                    raise LogStoreUnavailable(f"cannot connect to Cassandra: {exc}") from exc
            if self._stmts is None:
                try:
                    if self._migrate:
                        migrate(self._session, self.keyspace, self._replication, self._ttl)
                    self._stmts = self._prepare_all(self._session)
                except _UNAVAILABLE as exc:
                    raise LogStoreUnavailable(f"cannot prepare statements: {exc}") from exc
            return self._session, self._stmts

    def _prepare_all(self, session: Any) -> dict[str, Any]:
        ks = self.keyspace
        imp_cols = ", ".join(_IMPRESSION_COLUMNS)
        by_time_cols = "hour_bucket, shard, " + imp_cols

        def marks(n: int) -> str:
            return ", ".join("?" * n)

        cql = {
            "ins_imp_time": f"INSERT INTO {ks}.impressions_by_time ({by_time_cols}) "
            f"VALUES ({marks(len(_IMPRESSION_COLUMNS) + 2)})",
            "ins_imp_decision": f"INSERT INTO {ks}.impressions_by_decision ({imp_cols}) "
            f"VALUES ({marks(len(_IMPRESSION_COLUMNS))})",
            "ins_imp_member": f"INSERT INTO {ks}.impressions_by_member ({imp_cols}) "
            f"VALUES ({marks(len(_IMPRESSION_COLUMNS))})",
            "ins_out_decision": f"INSERT INTO {ks}.outcomes_by_decision "
            f"({', '.join(_OUTCOME_FIELDS)}) VALUES ({marks(len(_OUTCOME_FIELDS))})",
            "ins_out_time": f"INSERT INTO {ks}.outcomes_by_time (hour_bucket, shard, "
            f"{', '.join(_OUTCOME_FIELDS)}) VALUES ({marks(len(_OUTCOME_FIELDS) + 2)})",
            "ins_out_unknown": f"INSERT INTO {ks}.unknown_outcomes (hour_bucket, event_time, "
            "decision_id, outcome_key, kind, member_id, title_id, image_id, minutes_played) "
            f"VALUES ({marks(9)})",
            "sel_decision_exists": f"SELECT decision_id FROM {ks}.impressions_by_decision "
            "WHERE decision_id = ?",
            "sel_outcome_keys": f"SELECT outcome_key FROM {ks}.outcomes_by_decision "
            "WHERE decision_id = ?",
            "sel_imp_time": f"SELECT {imp_cols} FROM {ks}.impressions_by_time "
            "WHERE hour_bucket IN ? AND shard IN ? AND decided_at >= ? AND decided_at < ?",
            "sel_out_time": f"SELECT {', '.join(_OUTCOME_FIELDS)} FROM {ks}.outcomes_by_time "
            "WHERE hour_bucket IN ? AND shard IN ? AND event_time >= ? AND event_time < ?",
            "sel_imp_member": f"SELECT {imp_cols} FROM {ks}.impressions_by_member "
            "WHERE member_id = ? LIMIT ?",
        }
        stmts: dict[str, Any] = {}
        for name, text in cql.items():
            stmt = session.prepare(text)
            stmt.consistency_level = self._cl
            stmt.is_idempotent = True
            if name.startswith("sel_"):
                stmt.fetch_size = self.fetch_size
            stmts[name] = stmt
        return stmts

    def _run_concurrently(self, work: Iterable[tuple[Any, tuple[Any, ...]]]) -> list[Any]:
        """execute_async every (statement, values) with at most max_in_flight pending.

        Returns the results in order. The first error is raised (as
        LogStoreUnavailable when it means the cluster is out of reach) after the
        requests already sent have completed, so none is left running unobserved.
        """
        session, _ = self._ready()
        window: deque[Any] = deque()
        results: list[Any] = []
        first_error: BaseException | None = None

        def settle(future: Any) -> None:
            nonlocal first_error
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                results.append(None)
                if first_error is None:
                    first_error = exc

        try:
            for stmt, values in work:
                if first_error is not None:
                    break
                if len(window) >= self.max_in_flight:
                    settle(window.popleft())
                window.append(session.execute_async(stmt, values))
        except _UNAVAILABLE as exc:
            first_error = first_error or exc
        finally:
            while window:
                settle(window.popleft())
        if first_error is not None:
            if isinstance(first_error, _UNAVAILABLE):
                raise LogStoreUnavailable(f"Cassandra: {first_error}") from first_error
            raise first_error
        return results

    def _execute(self, stmt: Any, values: tuple[Any, ...]) -> Any:
        session, _ = self._ready()
        try:
            return session.execute(stmt, values)
        except _UNAVAILABLE as exc:
            raise LogStoreUnavailable(f"Cassandra: {exc}") from exc

    # --- writes -----------------------------------------------------------------------

    def write_impressions(self, impressions: list[Impression]) -> None:
        if not impressions:
            return
        _, st = self._ready()

        def work() -> Iterator[tuple[Any, tuple[Any, ...]]]:
            for imp in impressions:
                values = _impression_values(imp)
                yield st["ins_imp_decision"], values
                yield (
                    st["ins_imp_time"],
                    (
                        hour_bucket(imp.decided_at),
                        shard_of(imp.decision_id, self.shards),
                        *values,
                    ),
                )
                yield st["ins_imp_member"], values

        self._run_concurrently(work())

    def write_outcomes(self, outcomes: list[Outcome]) -> OutcomeWriteResult:
        if not outcomes:
            return OutcomeWriteResult()
        _, st = self._ready()
        ids = list(dict.fromkeys(o.decision_id for o in outcomes))
        lookups = self._run_concurrently(
            [(st["sel_decision_exists"], (d,)) for d in ids]
            + [(st["sel_outcome_keys"], (d,)) for d in ids]
        )
        known = {d for d, rows in zip(ids, lookups[: len(ids)]) if _first(rows) is not None}
        stored: set[str] = set()
        held: dict[str, int] = {}  # outcomes stored per decision id
        for d, rows in zip(ids, lookups[len(ids) :]):
            keys = [_get(r, "outcome_key", 0) for r in (rows or ())]
            stored.update(keys)
            held[d] = len(keys)

        written = duplicates = unknown = refused = 0
        work: list[tuple[Any, tuple[Any, ...]]] = []
        for o in outcomes:
            key = outcome_key(o)
            if key in stored:
                duplicates += 1
                continue
            is_known = o.decision_id in known
            if not is_known and held.get(o.decision_id, 0) >= MAX_OUTCOMES_PER_UNKNOWN_DECISION:
                refused += 1
                continue
            stored.add(key)
            held[o.decision_id] = held.get(o.decision_id, 0) + 1
            written += 1
            kind = OutcomeKind(o.kind).value
            event_time = as_utc(o.event_time)
            values = (
                o.decision_id,
                kind,
                event_time,
                key,
                o.member_id,
                o.title_id,
                o.image_id,
                float(o.minutes_played),
                is_known,
            )
            work.append((st["ins_out_decision"], values))
            work.append(
                (
                    st["ins_out_time"],
                    (hour_bucket(event_time), shard_of(o.decision_id, self.shards), *values),
                )
            )
            if not is_known:
                unknown += 1
                work.append(
                    (
                        st["ins_out_unknown"],
                        (
                            hour_bucket(event_time),
                            event_time,
                            o.decision_id,
                            key,
                            kind,
                            o.member_id,
                            o.title_id,
                            o.image_id,
                            float(o.minutes_played),
                        ),
                    )
                )
        self._run_concurrently(work)
        return OutcomeWriteResult(written, duplicates, unknown, refused)

    # --- reads ------------------------------------------------------------------------

    def scan_impressions(self, since: datetime, until: datetime) -> Iterator[Impression]:
        since, until = as_utc(since), as_utc(until)
        for rows_of_run in self._scan_partitions("sel_imp_time", since, until):
            rows = [_impression_from_row(row) for row in rows_of_run]
            rows.sort(key=lambda i: (i.decided_at, i.decision_id))
            yield from rows

    def scan_outcomes(self, since: datetime, until: datetime) -> Iterator[Outcome]:
        since, until = as_utc(since), as_utc(until)
        for rows_of_run in self._scan_partitions("sel_out_time", since, until):
            rows = [
                (as_utc(_get(row, "event_time")), _get(row, "outcome_key"), _outcome_from_row(row))
                for row in rows_of_run
            ]
            rows.sort(key=lambda t: (t[0], t[1]))
            yield from (t[2] for t in rows)

    def _scan_partitions(self, name: str, since: datetime, until: datetime) -> Iterator[list[Any]]:
        """The rows of [since, until), a run of consecutive hour buckets at a time, oldest first
        (within a run in no particular order: the caller sorts).

        One query covers a run's buckets and all their shards (``hour_bucket IN ? AND shard IN
        ?``). A run starts at one bucket and doubles, up to _SCAN_MAX_BUCKETS, while runs come
        back sparse (fewer than fetch_size rows); a run of several buckets whose first page is
        full is not read but taken again bucket by bucket, so what is held is at most one
        bucket or one page. Found on a real node: one query per (bucket, shard), ``keyart log
        tail`` on a log without recent rows (it looks back up to a year: 8,760 buckets x 8
        shards, 70,080 queries) took three to six minutes; this way it is about 400 queries.
        """
        _, st = self._ready()
        stmt = st[name]
        shards = list(range(self.shards))
        buckets = list(hour_buckets(since, until))
        ahead, i = 1, 0
        while i < len(buckets):
            run = buckets[i : i + ahead]
            result = self._execute(stmt, (run, shards, since, until))
            if len(run) > 1 and getattr(result, "has_more_pages", False):
                ahead = 1  # dense: one bucket per query from here
                continue
            i += len(run)
            rows = list(self._rows(result))
            yield rows
            ahead = min(_SCAN_MAX_BUCKETS, ahead * 2) if len(rows) < self.fetch_size else 1

    @staticmethod
    def _rows(result: Any) -> Iterator[Any]:
        """A result's rows; the driver fetches further pages while iterating, so its outage
        errors surface here too."""
        if result is None:
            return
        try:
            yield from result
        except _UNAVAILABLE as exc:
            raise LogStoreUnavailable(f"Cassandra: {exc}") from exc

    def recent_for_member(self, member_id: str, limit: int) -> list[Impression]:
        if limit <= 0:
            return []
        _, st = self._ready()
        rows = self._execute(st["sel_imp_member"], (member_id, int(limit)))
        return [_impression_from_row(r) for r in rows]

    # --- lifecycle --------------------------------------------------------------------

    def ping(self) -> None:
        session, _ = self._ready()
        try:
            session.execute("SELECT release_version FROM system.local")
        except _UNAVAILABLE as exc:
            raise LogStoreUnavailable(f"Cassandra: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session, self._session = self._session, None
        if session is None or self._factory is None:
            return  # a session handed in is owned by the caller
        cluster = getattr(session, "cluster", None)
        try:
            (cluster.shutdown if cluster is not None else session.shutdown)()
        except Exception:  # pragma: no cover - best effort at shutdown
            log.exception("error shutting down the Cassandra session")


# --- row mapping ------------------------------------------------------------------------


def _impression_values(imp: Impression) -> tuple[Any, ...]:
    actors = normalize_actors(imp.actor_affinity)
    return (
        imp.decision_id,
        imp.request_id,
        imp.member_id,
        imp.title_id,
        imp.image_id,
        imp.lineage_id,
        float(imp.propensity),
        float(imp.score),
        bool(imp.explored),
        imp.policy,
        imp.model_version,
        int(imp.position),
        imp.country,
        imp.language,
        imp.device,
        imp.surface,
        as_utc(imp.decided_at),
        imp.fallback_reason,
        imp.feature_schema,
        encode_features(imp.features),
        # Frozen lists; empty lists are bound as such, never None (a null is a tombstone).
        [a for a, _ in actors],
        [w for _, w in actors],
        imp.experiment,
        imp.cell,
        encode_shadows(imp.shadows),
        float(imp.latency_ms),
    )


def _get(row: Any, name: str, index: int | None = None) -> Any:
    if isinstance(row, Mapping):
        return row[name]
    if hasattr(row, name):
        return getattr(row, name)
    if index is not None:
        return row[index]
    raise KeyError(name)


def _first(rows: Any) -> Any:
    if rows is None:
        return None
    for row in rows:
        return row
    return None


def _impression_from_row(row: Any) -> Impression:
    values = {f: _get(row, f, i) for i, f in enumerate(_IMPRESSION_FIELDS)}
    n = len(_IMPRESSION_FIELDS)
    actors = _get(row, "top_actors", n) or ()
    weights = _get(row, "top_actor_weights", n + 1) or ()
    if len(actors) != len(weights):  # both are written by one INSERT: not by the store
        log.warning("decision %s: %d top_actors but %d top_actor_weights; pairing the first",
                    values["decision_id"], len(actors), len(weights))
    values["actor_affinity"] = normalize_actors(zip(actors, weights))
    values["experiment"] = _get(row, "experiment", n + 2) or ""
    values["cell"] = _get(row, "cell", n + 3) or ""
    values["shadows"] = decode_shadows(_get(row, "shadows", n + 4))
    values["latency_ms"] = float(_get(row, "latency_ms", n + 5) or 0.0)
    values["decided_at"] = as_utc(values["decided_at"])
    values["features"] = feature_row(values["features"])
    values["explored"] = bool(values["explored"])
    for text in ("fallback_reason", "feature_schema"):
        values[text] = values[text] or ""
    return Impression(**values)


def _outcome_from_row(row: Any) -> Outcome:
    return Outcome(
        decision_id=_get(row, "decision_id"),
        member_id=_get(row, "member_id"),
        title_id=_get(row, "title_id"),
        image_id=_get(row, "image_id"),
        kind=OutcomeKind(_get(row, "kind")),
        minutes_played=float(_get(row, "minutes_played")),
        event_time=as_utc(_get(row, "event_time")),
    )


# --- the real cluster -------------------------------------------------------------------


def build_cluster(settings: KeyartSettings) -> Any:
    """A driver Cluster from settings (not connected)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy

    hosts = [h.strip() for h in settings.cassandra_contact_points.split(",") if h.strip()]
    if not hosts:
        raise ValueError("KEYART_CASSANDRA_CONTACT_POINTS is empty")
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc or None)
        ),
        consistency_level=_consistency_value(settings.cassandra_consistency),
        request_timeout=10.0,
    )
    kwargs: dict[str, Any] = {
        "contact_points": hosts,
        "port": settings.cassandra_port,
        "execution_profiles": {EXEC_PROFILE_DEFAULT: profile},
        "connect_timeout": 5,
        # The driver's default (1 s doubling to 600 s) leaves a node that came back unused
        # for about as long again as it was down, up to 10 minutes, while the writer keeps
        # spooling: on a real node killed for 15 s, the driver took another ~16 s to
        # reconnect. Capped at 10 s, recovery follows the node within seconds.
        "reconnection_policy": ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
    }
    if settings.cassandra_username:
        kwargs["auth_provider"] = PlainTextAuthProvider(
            username=settings.cassandra_username, password=settings.cassandra_password
        )
    if settings.cassandra_tls_ca_file:
        ctx = ssl.create_default_context(cafile=settings.cassandra_tls_ca_file)
        kwargs["ssl_context"] = ctx
    return Cluster(**kwargs)


def connect_session(settings: KeyartSettings) -> Any:
    """Build a Cluster and connect; the cluster is shut down when connecting fails."""
    cluster = build_cluster(settings)
    try:
        return cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise
