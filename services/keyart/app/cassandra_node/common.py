"""What every part of the node package shares: constants, errors, NodeInfo and the home's layout."""

from __future__ import annotations

import contextlib
import fcntl
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CASSANDRA_VERSION = "5.0.9"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
HOST = "127.0.0.1"
DATACENTER = "datacenter1"  # what SimpleSnitch reports
SUPERUSER = ("cassandra", "cassandra")  # PasswordAuthenticator's default superuser
TLS_STORE_PASSWORD = "keyart-test-only"
DAEMON_CLASS = "org.apache.cassandra.service.CassandraDaemon"


class CassandraNodeError(RuntimeError):
    """An expected failure: the CLI prints it on one line."""


class MissingToolError(CassandraNodeError):
    """java/mvn/keytool missing or of the wrong version (CLI exit code 2)."""


class NodeStartError(CassandraNodeError):
    """The JVM died or CQL did not answer in time; carries the log's tail."""


@dataclass(frozen=True)
class NodeInfo:
    """Where a running node listens and how to reach it."""

    host: str
    port: int  # native transport (CQL)
    storage_port: int
    pid: int
    home: Path
    version: str
    auth: bool
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # PEM of the test CA (tls only)
    log_file: Path | None = None
    datacenter: str = DATACENTER
    started: bool = True  # False when start_node() found this node already running
    ready_seconds: float = 0.0  # JVM launch to first successful CQL query (0 when reused)

    def env(self) -> dict[str, str]:
        """The KEYART_* variables (keyart.settings.KeyartSettings) that point Keyart at this node."""
        env = {"KEYART_CASSANDRA_HOSTS": self.host, "KEYART_CASSANDRA_PORT": str(self.port)}
        if self.auth and self.username is not None and self.password is not None:
            env["KEYART_CASSANDRA_USERNAME"] = self.username
            env["KEYART_CASSANDRA_PASSWORD"] = self.password
        if self.tls and self.ca_file is not None:
            env["KEYART_CASSANDRA_TLS_CA_FILE"] = str(self.ca_file)
        return env

    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client passes as cassandra-driver's ``ssl_context`` (None without TLS)."""
        if not self.tls or self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass
class _Layout:
    home: Path

    @property
    def conf(self) -> Path:
        return self.home / "conf"

    @property
    def yaml(self) -> Path:
        return self.conf / "cassandra.yaml"

    @property
    def logback(self) -> Path:
        return self.conf / "logback.xml"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def system_log(self) -> Path:
        return self.logs / "system.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs / "stdout.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "cassandra.pid"

    @property
    def state(self) -> Path:
        return self.home / "node.json"

    @property
    def tls(self) -> Path:
        return self.home / "tls"

    @property
    def keystore(self) -> Path:
        return self.tls / "keystore.p12"

    @property
    def ca_pem(self) -> Path:
        return self.tls / "ca.pem"


@dataclass
class _State:
    """node.json: what a restart must keep."""

    version: str
    native_port: int
    storage_port: int
    auth: bool = False
    tls: bool = False
    heap: str = "1g"


def _project_root() -> Path:
    """The checkout holding this module (pyproject.toml beside services/), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "services").is_dir():
            return parent
    return Path.cwd()


def default_home() -> Path:
    return _project_root() / "var" / "cassandra"


def default_cache_dir() -> Path:
    return _project_root() / ".cache" / "cassandra"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
