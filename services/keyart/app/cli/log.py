"""`keyart log`: operate the decision log (migrate, tail, export, stats).

Length (~500 lines): the four commands of one typer sub-app share their option
parsing, settings and error handling; the logic they call lives in the adapters.

Mount with ``app.add_typer(log_app, name="log")``. The backend comes from
``KeyartSettings()`` (``KEYART_LOG_BACKEND``, ``KEYART_CASSANDRA_*``, ``KEYART_DATA_DIR``),
exactly as the serving processes choose it.

Times (``--since`` / ``--until``) are ISO-8601 (``2024-05-01``, ``2024-05-01T13:00:00Z``,
``2024-05-01T15:00:00+02:00``; without an offset they are UTC), ``now``, or an age
before now: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``.

Errors (a bad date, Cassandra out of reach, a bad setting) print one line
``error: ...`` on stderr and exit with status 2, never a traceback
(``KEYART_DEBUG=1`` re-raises unexpected errors).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from keyart.app.cli.support import console as _err
from keyart.app.cli.support import friendly as cli_errors
from keyart.app.cli.support import load_settings
from keyart.errors import KeyartError
from keyart.settings import KeyartSettings

log_app = typer.Typer(
    help="The decision log: schema migration, tail, Parquet export, stats.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



class LogCliError(KeyartError):
    """A `keyart log` command cannot do what was asked (bad input, backend down)."""


# ----------------------------------------------------------------------------- helpers


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, option: str, now: datetime | None = None) -> datetime:
    """A tz-aware UTC datetime from ISO-8601, ``now`` or an age like ``7d``."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    if raw.lower() == "now":
        return now
    m = _AGE.match(raw)
    if m:
        return now - timedelta(**{_UNIT[m.group(2).lower()]: float(m.group(1))})
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise LogCliError(
            f"{option}: cannot read {text!r}; use ISO-8601 (2024-05-01T12:00:00Z), "
            "'now', or an age before now like 30m, 24h, 7d"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_window(since: str, until: str) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    lo, hi = parse_when(since, "--since", now), parse_when(until, "--until", now)
    if lo >= hi:
        raise LogCliError(
            f"--since ({lo.isoformat()}) must be before --until ({hi.isoformat()})"
        )
    return lo, hi


def _emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        human(result)


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _backend(settings: KeyartSettings) -> tuple[str, str]:
    from keyart.adapters.decision_log.factory import uses_cassandra

    if uses_cassandra(settings):
        hosts = settings.cassandra_contact_points.strip()
        return "cassandra", f"{hosts}:{settings.cassandra_port}/{settings.cassandra_keyspace}"
    return "sqlite", str(settings.log_sqlite_path)


def _open_store(settings: KeyartSettings) -> Any:
    from keyart.adapters.decision_log.factory import open_log_store

    try:
        store = open_log_store(settings)
    except ValueError as exc:
        raise LogCliError(str(exc)) from None
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - reported as one line
        store.close()
        kind, where = _backend(settings)
        raise LogCliError(f"decision log ({kind} at {where}) unreachable: {_short(exc)}") from None
    return store


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ----------------------------------------------------------------------------- migrate

ReplicationFactor = Annotated[
    int | None,
    typer.Option(
        "--replication-factor", "--rf", min=1,
        help="Replicas per datacenter (default 3 with a datacenter, else 1).",
    ),
]
TtlDays = Annotated[
    float,
    typer.Option("--ttl-days", min=0.0, help="Row TTL in days (default_time_to_live); 0 keeps rows forever."),
]
Dcs = Annotated[
    list[str] | None,
    typer.Option(
        "--dc",
        help="Datacenter for NetworkTopologyStrategy (repeatable; default KEYART_CASSANDRA_LOCAL_DC; "
        "none: SimpleStrategy, for development).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@log_app.command("migrate")
@cli_errors
def migrate_cmd(
    replication_factor: ReplicationFactor = None,
    ttl_days: TtlDays = 0.0,
    dc: Dcs = None,
    as_json: AsJson = False,
) -> None:
    """Create the decision-log schema (idempotent: safe to run again).

    Cassandra: applies schema.cql (keyspace and tables, IF NOT EXISTS) with the given
    replication and TTL, and adds columns introduced since to existing tables. An
    existing keyspace's replication or a table's TTL is never altered: a change is
    reported and needs an ALTER by an operator.
    SQLite: creates the file and tables (WAL mode), adding missing columns to an older file.
    """
    settings = load_settings()
    kind, where = _backend(settings)
    if kind == "cassandra":
        result = _migrate_cassandra(settings, replication_factor, ttl_days, dc or [])
    else:
        from keyart.adapters.decision_log.sqlite import SqliteLogStore

        store = SqliteLogStore(Path(where))
        try:
            counts = store.counts()
        finally:
            store.close()
        result = {
            "backend": "sqlite",
            "path": where,
            "tables": ["impressions", "outcomes"],
            "journal_mode": counts["journal_mode"],
            "impressions": counts["impressions"],
            "outcomes": counts["outcomes"],
        }
        if replication_factor is not None or ttl_days or dc:
            result["note"] = "--replication-factor, --ttl-days and --dc apply to Cassandra only"

    def human(r: dict[str, Any]) -> None:
        out = _out()
        if r["backend"] == "sqlite":
            out.print(
                f"sqlite decision log ready: {r['path']} (journal {r['journal_mode']}, "
                f"{r['impressions']} impressions, {r['outcomes']} outcomes)"
            )
        else:
            state = "already existed" if r["keyspace_existed"] else "created"
            out.print(
                f"cassandra keyspace {r['keyspace']} {state}; {r['statements']} statements applied "
                f"(replication {r['replication']}, ttl {r['ttl_seconds']}s)"
            )
        for w in r.get("warnings", []):
            _err.print(f"warning: {w}")
        if r.get("note"):
            _err.print(f"note: {r['note']}")

    _emit(result, as_json, human)


def _migrate_cassandra(
    settings: KeyartSettings, rf: int | None, ttl_days: float, dcs: list[str]
) -> dict[str, Any]:
    from keyart.adapters.decision_log import cassandra as cs

    dcs = [d.strip() for d in dcs if d.strip()]
    if not dcs and settings.cassandra_local_dc.strip():
        dcs = [settings.cassandra_local_dc.strip()]
    factor = rf if rf is not None else (3 if dcs else 1)
    replication: dict[str, Any] = (
        {"class": "NetworkTopologyStrategy", **{d: factor for d in dcs}}
        if dcs
        else {"class": "SimpleStrategy", "replication_factor": factor}
    )
    ttl = round(ttl_days * 86_400)
    keyspace = settings.cassandra_keyspace
    try:
        cs.render_schema(keyspace, replication, ttl)  # validates the name before connecting
    except ValueError as exc:
        raise LogCliError(str(exc)) from None
    _, where = _backend(settings)
    try:
        session = cs.connect_session(settings)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise LogCliError(f"cannot reach Cassandra at {where}: {_short(exc)}") from None
    try:
        existing = _keyspace_replication(session, keyspace)
        try:
            statements = cs.migrate(session, keyspace, replication, ttl)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise LogCliError(f"schema migration failed on {where}: {_short(exc)}") from None
    finally:
        cluster = getattr(session, "cluster", None)
        try:
            (cluster.shutdown if cluster is not None else session.shutdown)()
        except Exception:  # noqa: BLE001, S110  # pragma: no cover - best effort
            pass
    warnings: list[str] = []
    if existing is not None:
        want = {k: str(v) for k, v in replication.items()}
        have = {k: str(v).rsplit(".", 1)[-1] if k == "class" else str(v) for k, v in existing.items()}
        want["class"] = want["class"].rsplit(".", 1)[-1]
        if have != want:
            warnings.append(
                f"keyspace {keyspace} exists with replication {existing}; not changed "
                f"(ALTER KEYSPACE {keyspace} WITH replication = {cs.replication_cql(replication)})"
            )
        warnings.append(
            "existing tables keep their default_time_to_live; change it with ALTER TABLE "
            "... WITH default_time_to_live = N"
        )
    return {
        "backend": "cassandra",
        "contact_points": where,
        "keyspace": keyspace,
        "keyspace_existed": existing is not None,
        "replication": cs.replication_cql(replication),
        "ttl_seconds": ttl,
        "statements": len(statements),
        "warnings": warnings,
    }


def _keyspace_replication(session: Any, keyspace: str) -> dict[str, Any] | None:
    try:
        rows = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        )
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise LogCliError(f"cannot read the Cassandra schema: {_short(exc)}") from None
    for row in rows or ():
        rep = row["replication"] if isinstance(row, dict) else getattr(row, "replication", row[0])
        return dict(rep)
    return None


# ----------------------------------------------------------------------------- tail


def _impression_dict(imp: Any) -> dict[str, Any]:
    return {
        "decided_at": imp.decided_at.isoformat(),
        "decision_id": imp.decision_id,
        "request_id": imp.request_id,
        "member_id": imp.member_id,
        "title_id": imp.title_id,
        "image_id": imp.image_id,
        "lineage_id": imp.lineage_id,
        "position": imp.position,
        "policy": imp.policy,
        "propensity": imp.propensity,
        "score": imp.score,
        "explored": imp.explored,
        "model_version": imp.model_version,
        "device": imp.device,
        "country": imp.country,
        "surface": imp.surface,
        "fallback_reason": imp.fallback_reason,
        "n_features": len(imp.features) // 4,  # float32 each
    }


@log_app.command("tail")
@cli_errors
def tail_cmd(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, max=100_000, help="How many impressions.")] = 20,
    as_json: AsJson = False,
) -> None:
    """The last N impressions (oldest first), looking back up to a year."""
    from keyart.adapters.decision_log.export import tail

    settings = load_settings()
    store = _open_store(settings)
    try:
        rows = [_impression_dict(i) for i in tail(store, n)]
    finally:
        store.close()
    kind, where = _backend(settings)
    result = {"backend": kind, "location": where, "impressions": rows}

    def human(r: dict[str, Any]) -> None:
        out = _out()
        if not r["impressions"]:
            out.print(f"no impressions in the last year ({r['backend']} at {r['location']})")
            return
        cols = ("decided_at", "member", "title", "image", "pos", "policy", "p", "score", "note")
        rows = [
            (
                i["decided_at"][:26], i["member_id"], i["title_id"], i["image_id"], str(i["position"]),
                i["policy"], f"{i['propensity']:.3f}", f"{i['score']:.3f}",
                i["fallback_reason"] or ("explored" if i["explored"] else ""),
            )
            for i in r["impressions"]
        ]
        widths = [max(len(c), *(len(row[k]) for row in rows)) for k, c in enumerate(cols)]
        for row in (cols, *rows):
            sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")

    _emit(result, as_json, human)


# ----------------------------------------------------------------------------- export


@log_app.command("export")
@cli_errors
def export_cmd(
    since: Annotated[str, typer.Option("--since", help="Start (inclusive): ISO-8601 or an age like 7d.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (replaced atomically).")],
    until: Annotated[str, typer.Option("--until", help="End (exclusive): ISO-8601, 'now' or an age.")] = "now",
    fmt: Annotated[str, typer.Option("--format", help="Output format (only 'parquet').")] = "parquet",
    outcome_window: Annotated[
        str, typer.Option("--outcome-window", help="Outcomes counted up to this long after --until.")
    ] = "1d",
    as_json: AsJson = False,
) -> None:
    """Impressions decided in [since, until) joined with their outcomes, as Parquet.

    The columns are documented in keyart.adapters.decision_log.export; `keyart train
    --log-export` reads the file.
    """
    from keyart.adapters.decision_log.export import export_parquet

    if fmt.lower() != "parquet":
        raise LogCliError(f"--format: {fmt!r} is not supported (only 'parquet')")
    lo, hi = parse_window(since, until)
    m = _AGE.match(outcome_window)
    if not m:
        raise LogCliError(f"--outcome-window: cannot read {outcome_window!r}; use e.g. 12h, 1d, 3d")
    window = timedelta(**{_UNIT[m.group(2).lower()]: float(m.group(1))})
    if out.exists() and out.is_dir():
        raise LogCliError(f"--out: {out} is a directory; give a file path")
    settings = load_settings()
    store = _open_store(settings)
    try:
        result = export_parquet(store, lo, hi, out, outcome_window=window)
    finally:
        store.close()
    result.update(since=lo.isoformat(), until=hi.isoformat(), format="parquet")

    def human(r: dict[str, Any]) -> None:
        _out().print(
            f"exported {r['impressions']} impressions ({r['played']} played, {r['seen']} seen, "
            f"{r['outcomes_scanned']} outcomes scanned) from {r['since']} to {r['until']} -> {r['path']}"
        )

    _emit(result, as_json, human)


# ----------------------------------------------------------------------------- stats


@log_app.command("stats")
@cli_errors
def stats_cmd(
    since: Annotated[str, typer.Option("--since", help="Window start for the per-window counts.")] = "24h",
    until: Annotated[str, typer.Option("--until", help="Window end.")] = "now",
    as_json: AsJson = False,
) -> None:
    """Counts: impressions and outcomes in a window, store totals, spool state.

    The window counts go by policy, outcome kind and fallback reason; totals are
    exact for SQLite (Cassandra: window only); the spool lists each writer's
    directory, live or orphaned (awaiting adoption by a live writer).
    """
    from keyart.adapters.decision_log.spool_dirs import spool_status

    lo, hi = parse_window(since, until)
    settings = load_settings()
    kind, where = _backend(settings)
    store = _open_store(settings)
    try:
        policies: Counter[str] = Counter()
        fallbacks: Counter[str] = Counter()
        impressions = explored = 0
        members: set[str] = set()
        for imp in store.scan_impressions(lo, hi):
            impressions += 1
            explored += int(imp.explored)
            policies[imp.policy] += 1
            if imp.fallback_reason:
                fallbacks[imp.fallback_reason] += 1
            members.add(imp.member_id)
        kinds: Counter[str] = Counter()
        for o in store.scan_outcomes(lo, hi):
            kinds[getattr(o.kind, "value", str(o.kind))] += 1
        totals = store.counts() if hasattr(store, "counts") else None
    finally:
        store.close()
    spools = spool_status(settings.spool_root)
    result: dict[str, Any] = {
        "backend": kind,
        "location": where,
        "window": {
            "since": lo.isoformat(),
            "until": hi.isoformat(),
            "impressions": impressions,
            "members": len(members),
            "explored": explored,
            "by_policy": dict(sorted(policies.items())),
            "fallbacks": dict(sorted(fallbacks.items())),
            "outcomes": sum(kinds.values()),
            "outcomes_by_kind": dict(sorted(kinds.items())),
        },
        "totals": totals,
        "spool": {
            "root": str(settings.spool_root),
            "dirs": spools,
            "pending_bytes": sum(int(d["bytes"]) for d in spools),  # type: ignore[call-overload]
            "live_writers": sum(1 for d in spools if d["alive"]),
            "orphans": sum(1 for d in spools if not d["alive"] and d["bytes"]),
        },
    }

    def human(r: dict[str, Any]) -> None:
        out = _out()
        w = r["window"]
        out.print(f"decision log: {r['backend']} at {r['location']}")
        out.print(
            f"window {w['since']} .. {w['until']}: {w['impressions']} impressions "
            f"({w['members']} members, {w['explored']} explored), {w['outcomes']} outcomes"
        )
        if w["by_policy"]:
            out.print("  by policy: " + ", ".join(f"{k}={v}" for k, v in w["by_policy"].items()))
        if w["outcomes_by_kind"]:
            out.print("  outcomes: " + ", ".join(f"{k}={v}" for k, v in w["outcomes_by_kind"].items()))
        if w["fallbacks"]:
            out.print("  fallbacks: " + ", ".join(f"{k}={v}" for k, v in w["fallbacks"].items()))
        t = r["totals"]
        if t:
            out.print(
                f"totals: {t['impressions']} impressions, {t['outcomes']} outcomes "
                f"({t['outcomes_unknown_decision']} with unknown decision), "
                f"{t['first_decided_at']} .. {t['last_decided_at']}"
            )
        s = r["spool"]
        out.print(
            f"spool {s['root']}: {s['live_writers']} live writers, {s['orphans']} orphans, "
            f"{s['pending_bytes']} bytes pending"
        )

    _emit(result, as_json, human)


__all__ = ["LogCliError", "log_app", "parse_when"]
