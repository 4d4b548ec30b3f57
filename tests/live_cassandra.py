"""A real Cassandra for the tests marked ``cassandra`` (fixtures in tests/conftest.py).

The session starts at most two nodes with :mod:`keyart.app.cassandra_node`, lazily, the first
time a test asks for one, and stops them at the end of the session:

* ``plain``: no auth, no TLS, data under the session's pytest tmp dir; shared by the live
  suite and the fault tests (which SIGKILL / SIGSTOP and restart it in place: same home,
  same ports, same data);
* ``secure``: PasswordAuthenticator (superuser cassandra/cassandra) and client TLS with a
  throw-away CA, for the authentication and TLS tests only.

With ``KEYART_CASSANDRA_HOSTS`` (or ``..._CONTACT_POINTS``) set, the live suite uses that
cluster instead of starting ``plain`` (port, user, password and CA from the other
``KEYART_CASSANDRA_*``); the fault tests, which must kill the node, then start their own.

A node that cannot start (no Java 17, no Maven for the first jar fetch, no network to Maven
Central, a start-up error) or a configured cluster that does not answer skips the tests with
the reason; with ``CI=true`` in the environment it fails them instead. A start that failed is
not retried within the session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keyart.app.cassandra_node import CassandraNodeError, NodeInfo, default_cache_dir, start_node, stop_node
from keyart.settings import KeyartSettings

PLAIN_HEAP = "1g"
SECURE_HEAP = "512m"
TLS_FILES = ("keystore.p12", "ca.pem")  # what keyart.app.cassandra_node writes to <home>/tls


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true (a missing Cassandra is then a failure)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a Cassandra that cannot run is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def external_hosts() -> str:
    return (os.environ.get("KEYART_CASSANDRA_HOSTS") or os.environ.get("KEYART_CASSANDRA_CONTACT_POINTS") or "").strip()


@dataclass
class LiveCassandra:
    """A reachable Cassandra: a node this session started (``info`` set) or a configured one."""

    name: str
    host: str
    port: int
    username: str = ""
    password: str = ""
    ca_file: str = ""
    info: NodeInfo | None = None
    start_seconds: float = 0.0  # start_node() wall time, jar fetch included
    opts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # timings for the session summary

    @property
    def controlled(self) -> bool:
        """True when this session started the node (so a test may kill and restart it)."""
        return self.info is not None

    @property
    def pid(self) -> int:
        assert self.info is not None, "not a node this session started"
        return self.info.pid

    def env(self, **extra: str) -> dict[str, str]:
        """KEYART_* variables that point Keyart (and `keyart log ...`) at this node."""
        env = {
            "KEYART_LOG_BACKEND": "cassandra",
            "KEYART_CASSANDRA_HOSTS": self.host,
            "KEYART_CASSANDRA_PORT": str(self.port),
            "KEYART_CASSANDRA_USERNAME": self.username,
            "KEYART_CASSANDRA_PASSWORD": self.password,
            "KEYART_CASSANDRA_TLS_CA_FILE": self.ca_file,
        }
        env.update(extra)
        return env

    def settings(self, keyspace: str = "keyart", **overrides: Any) -> KeyartSettings:
        values: dict[str, Any] = {
            "log_backend": "cassandra",
            "cassandra_contact_points": self.host,
            "cassandra_port": self.port,
            "cassandra_keyspace": keyspace,
            "cassandra_username": self.username,
            "cassandra_password": self.password,
            "cassandra_tls_ca_file": self.ca_file,
        }
        values.update(overrides)
        return KeyartSettings(**values)

    # --- fault injection (nodes this session started) --------------------------------

    def kill(self) -> None:
        """SIGKILL the JVM and reap it; the home keeps its data, node.json and ports."""
        assert self.info is not None, "cannot kill a node this session did not start"
        os.kill(self.info.pid, signal.SIGKILL)
        stop_node(self.info.home, timeout=30)  # the pid is gone: reaps our child, drops the pid file

    def restart(self) -> float:
        """Start the node again in the same home (same ports and data); seconds until CQL answered."""
        assert self.info is not None
        t0 = time.monotonic()
        self.info = start_node(self.info.home, **self.opts)
        took = time.monotonic() - t0
        self.notes.append(
            f"{self.name} node restarted in place: start_node {took:.1f} s, "
            f"CQL answered {self.info.ready_seconds:.1f} s after launch"
        )
        return took

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the JVM for the block (a node that hangs without closing its sockets)."""
        assert self.info is not None
        os.kill(self.info.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.info.pid, signal.SIGCONT)


def _tls_cache() -> Path:
    return default_cache_dir() / "test-tls"


def _seed_tls(home: Path) -> None:
    """Reuse the test CA and server keystore of an earlier session (start_node keeps TLS
    material already in the home): keytool takes 7 JVM runs, 10-30 s on two busy cores."""
    cache = _tls_cache()
    if all((cache / f).is_file() for f in TLS_FILES):
        (home / "tls").mkdir(parents=True, exist_ok=True)
        for f in TLS_FILES:
            shutil.copy2(cache / f, home / "tls" / f)


def _keep_tls(home: Path) -> None:
    cache = _tls_cache()
    if all((cache / f).is_file() for f in TLS_FILES) or not all((home / "tls" / f).is_file() for f in TLS_FILES):
        return
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(home / "tls", tmp)
    with contextlib.suppress(OSError):  # another session kept its copy first: fine
        tmp.rename(cache)
    shutil.rmtree(tmp, ignore_errors=True)


def new_keyspace(prefix: str = "keyart_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


TIMINGS: list[str] = []  # of every NodePool of the session, for the terminal summary


class NodePool:
    """The session's nodes, started on first use and stopped by ``stop_all``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: dict[str, LiveCassandra] = {}
        self.errors: dict[str, str] = {}
        self.timings = TIMINGS
        atexit.register(self.stop_all)  # pytest killed between tests: still stop the JVMs

    def get(self, name: str) -> LiveCassandra:
        """``plain`` (KEYART_CASSANDRA_HOSTS when set), ``own`` (always a node of ours) or ``secure``."""
        if name == "plain" and external_hosts():
            return self._external()
        if name == "own":
            name = "plain"
        if name in self.nodes:
            return self.nodes[name]
        if name in self.errors:
            unavailable(self.errors[name])
        opts: dict[str, Any] = (
            {"auth": True, "tls": True, "heap": SECURE_HEAP} if name == "secure" else {"heap": PLAIN_HEAP}
        )
        home = self.base / name
        if opts.get("tls"):
            _seed_tls(home)
        t0 = time.monotonic()
        try:
            info = start_node(home, **opts)
        except CassandraNodeError as exc:
            self.errors[name] = f"cannot start a Cassandra node ({name}): {exc}"
            unavailable(self.errors[name])
            raise  # unreachable: unavailable() raises
        took = time.monotonic() - t0
        if opts.get("tls"):
            _keep_tls(home)
        node = LiveCassandra(
            name=name,
            host=info.host,
            port=info.port,
            username=info.username or "",
            password=info.password or "",
            ca_file=str(info.ca_file or ""),
            info=info,
            start_seconds=took,
            opts=opts,
            notes=self.timings,
        )
        self.nodes[name] = node
        self.timings.append(
            f"{name} node ({'auth+tls' if name == 'secure' else 'plain'}, heap {opts['heap']}) on port "
            f"{info.port}: start_node {took:.1f} s, CQL answered {info.ready_seconds:.1f} s after launch"
        )
        return node

    def _external(self) -> LiveCassandra:
        if "external" in self.nodes:
            return self.nodes["external"]
        if "external" in self.errors:
            unavailable(self.errors["external"])
        s = KeyartSettings()
        node = LiveCassandra(
            name="external",
            host=s.cassandra_contact_points,
            port=s.cassandra_port,
            username=s.cassandra_username,
            password=s.cassandra_password,
            ca_file=s.cassandra_tls_ca_file,
        )
        from keyart.adapters.decision_log.cassandra import connect_session

        try:
            session = connect_session(node.settings())
        except Exception as exc:  # noqa: BLE001 - reported as the skip/fail reason
            self.errors["external"] = f"KEYART_CASSANDRA_HOSTS={node.host} port {node.port} does not answer: {exc}"
            unavailable(self.errors["external"])
            raise
        session.cluster.shutdown()
        self.nodes["external"] = node
        self.timings.append(f"external cluster {node.host}:{node.port} (KEYART_CASSANDRA_HOSTS)")
        return node

    def stop_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.info is not None:
                with contextlib.suppress(Exception):
                    os.kill(node.info.pid, signal.SIGCONT)  # a test interrupted inside paused()
                stop_node(node.info.home, timeout=30)
        self.nodes.clear()


@contextlib.contextmanager
def live_keyspace(
    node: LiveCassandra, *, ttl: int = 0, migrate: bool = True, prefix: str = "keyart_test"
) -> Iterator[tuple[Any, str]]:
    """(driver session, keyspace) on ``node``: a fresh keyspace (migrated unless told not
    to); afterwards the session is shut down and, on a cluster this session did not start,
    the keyspace dropped (a node of ours goes with its tmp dir; a DROP costs ~2 s)."""
    from keyart.adapters.decision_log.cassandra import connect_session
    from keyart.adapters.decision_log.cassandra import migrate as apply_schema

    keyspace = new_keyspace(prefix)
    session = connect_session(node.settings(keyspace))
    try:
        if migrate:
            apply_schema(session, keyspace, None, ttl)
        yield session, keyspace
    finally:
        if not node.controlled:
            with contextlib.suppress(Exception):
                session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        session.cluster.shutdown()


def column(session: Any, keyspace: str, table: str, name: str = "decision_id") -> list[Any]:
    """Every value of one column of a table (a full scan, paged by the driver)."""
    from cassandra.query import SimpleStatement

    stmt = SimpleStatement(f"SELECT {name} FROM {keyspace}.{table}", fetch_size=5000)
    return [getattr(row, name) for row in session.execute(stmt, timeout=60)]
