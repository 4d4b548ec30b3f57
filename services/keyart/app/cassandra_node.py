"""A real single-node Apache Cassandra on loopback, for development and tests.

The server comes from Maven Central (``org.apache.cassandra:cassandra-all``): Maven copies the
jar and its runtime dependencies into ``.cache/cassandra/<version>/lib`` of the checkout once;
later starts reuse that cache and run no Maven at all. The node's files live in a *home*
(default ``var/cassandra``): ``conf/`` (generated cassandra.yaml and logback.xml), ``data/``,
``commitlog/``, ``logs/system.log``, ``node.json`` (the chosen ports and options, so a restart
keeps the ports and the data) and ``cassandra.pid`` while it runs.

    python -m keyart.app.cassandra_node start [--auth] [--tls]   # prints the KEYART_* to export
    python -m keyart.app.cassandra_node status | env | stop

From Python (e.g. a pytest session fixture)::

    node = start_node(tmp_home, auth=True)
    os.environ.update(node.env())
    ...
    stop_node(tmp_home)

Standard library only; ``cassandra-driver`` is imported lazily for the readiness probe (without
it, readiness falls back to the log line plus a TCP connect). Needs Java 17 (``java`` on PATH or
``JAVA_HOME``) and, for the first fetch only, Maven (``mvn``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CASSANDRA_VERSION",
    "CassandraNodeError",
    "MissingToolError",
    "NodeInfo",
    "NodeStartError",
    "default_cache_dir",
    "default_home",
    "fetch_jars",
    "find_java",
    "main",
    "node_config",
    "node_status",
    "start_node",
    "stop_node",
]

CASSANDRA_VERSION = "5.0.9"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
HOST = "127.0.0.1"
DATACENTER = "datacenter1"  # what SimpleSnitch reports
SUPERUSER = ("cassandra", "cassandra")  # PasswordAuthenticator's default superuser
TLS_STORE_PASSWORD = "keyart-test-only"
DAEMON_CLASS = "org.apache.cassandra.service.CassandraDaemon"

# The --add-exports/--add-opens of Cassandra 5.0's conf/jvm17-server.options. Without them the
# daemon dies in FileUtils' static initializer (sun.nio.ch, jdk.internal.ref, ...).
JVM17_MODULE_FLAGS = [
    *(
        f"--add-exports={m}=ALL-UNNAMED"
        for m in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
        )
    ),
    *(
        f"--add-opens={m}=ALL-UNNAMED"
        for m in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
        )
    ),
]

log = logging.getLogger(__name__)

# Nodes started by this process, so stop_node() can reap its own child (no zombie).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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


# ---------------------------------------------------------------- locations and tools


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


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """A Java 17 binary: $JAVA_HOME, then PATH, then /usr/lib/jvm/*17*."""
    candidates: list[str] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += [str(p) for p in sorted(Path("/usr/lib/jvm").glob("*17*/bin/java"))]
    seen: list[str] = []
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        major = _java_major(java)
        if major == 17:
            return java
        seen.append(f"{java} is Java {major}")
    found = f" ({'; '.join(seen)})" if seen else ""
    raise MissingToolError(
        f"Cassandra {CASSANDRA_VERSION} needs Java 17: install openjdk-17-jre-headless (or set JAVA_HOME){found}"
    )


def _keytool(java: str) -> str:
    keytool = Path(os.path.realpath(java)).parent / "keytool"
    if keytool.exists():
        return str(keytool)
    found = shutil.which("keytool")
    if not found:
        raise MissingToolError("--tls needs keytool: install openjdk-17-jdk-headless")
    return found


def _require_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingToolError("fetching the Cassandra jars needs Maven: install maven")
    return mvn


# ---------------------------------------------------------------- jars


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.keyart</groupId>
  <artifactId>cassandra-server-classpath</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# Some poms in the tree declare their own repositories; send every request to Central.
_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0">
  <mirrors>
    <mirror>
      <id>central-only</id>
      <mirrorOf>*</mirrorOf>
      <url>{central}</url>
    </mirror>
  </mirrors>
</settings>
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_jars(
    version: str = CASSANDRA_VERSION,
    cache_dir: Path | None = None,
    *,
    maven_repo: Path | None = None,
) -> tuple[Path, float | None]:
    """The server's classpath directory, fetched with Maven unless cached.

    Returns (lib dir, seconds Maven took or None when the cache was used). ``maven_repo``
    overrides Maven's local repository (default ~/.m2/repository).
    """
    root = (cache_dir or default_cache_dir()) / version
    lib = root / "lib"
    main_jar = lib / f"cassandra-all-{version}.jar"
    if main_jar.is_file():
        return lib, None
    with _locked(root / ".lock"):
        if main_jar.is_file():  # another process fetched it meanwhile
            return lib, None
        mvn = _require_mvn()
        work = root / "maven"
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(_POM.format(version=version))
        (work / "settings.xml").write_text(_SETTINGS.format(central=MAVEN_CENTRAL))
        tmp = root / "lib.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-s", str(work / "settings.xml"), "-f", str(work / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        if maven_repo is not None:
            cmd.append(f"-Dmaven.repo.local={maven_repo}")
        t0 = time.monotonic()
        mvn_log = work / "maven.log"
        with open(mvn_log, "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        took = time.monotonic() - t0
        if rc != 0 or not (tmp / main_jar.name).is_file():
            raise CassandraNodeError(
                f"Maven could not fetch cassandra-all {version} (exit {rc}); see {mvn_log}:\n{_tail(mvn_log, 15)}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        return lib, took


# ---------------------------------------------------------------- configuration


def _free_port(exclude: set[int]) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port
    raise CassandraNodeError("no free loopback port")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _load_state(lay: _Layout) -> _State | None:
    try:
        raw = json.loads(lay.state.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CassandraNodeError(f"{lay.state} is unreadable ({exc}); remove it to pick new ports") from None
    known = {k: raw[k] for k in _State.__dataclass_fields__ if k in raw}
    return _State(**known)


def _save_state(lay: _Layout, st: _State) -> None:
    tmp = lay.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st), indent=2) + "\n")
    tmp.replace(lay.state)


def _q(value: str | Path) -> str:
    """A YAML double-quoted scalar (json strings are valid YAML)."""
    return json.dumps(str(value))


def _cassandra_yaml(lay: _Layout, st: _State) -> str:
    h = lay.home
    auth = (
        "authenticator: PasswordAuthenticator\nauthorizer: CassandraAuthorizer\n"
        if st.auth
        else "authenticator: AllowAllAuthenticator\nauthorizer: AllowAllAuthorizer\n"
    )
    tls = ""
    if st.tls:
        tls = (
            "client_encryption_options:\n"
            "  enabled: true\n"
            "  optional: false\n"
            f"  keystore: {_q(lay.keystore)}\n"
            f"  keystore_password: {_q(TLS_STORE_PASSWORD)}\n"
            "  store_type: PKCS12\n"
            "  require_client_auth: false\n"
        )
    return f"""# Generated by keyart.app.cassandra_node on each start; edits are overwritten.
cluster_name: keyart-local
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{HOST}:{st.storage_port}"
listen_address: {HOST}
rpc_address: {HOST}
storage_port: {st.storage_port}
native_transport_port: {st.native_port}
start_native_transport: true
commitlog_sync: periodic
commitlog_sync_period: 10s
data_file_directories:
  - {_q(h / "data")}
commitlog_directory: {_q(h / "commitlog")}
saved_caches_directory: {_q(h / "saved_caches")}
hints_directory: {_q(h / "hints")}
cdc_raw_directory: {_q(h / "cdc_raw")}
auto_snapshot: false
concurrent_compactors: 1
role_manager: CassandraRoleManager
{auth}{tls}"""


def _logback_xml(lay: _Layout) -> str:
    log_file = lay.system_log
    return f"""<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{log_file}</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>{log_file}.%i.zip</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
"""


def _make_tls(lay: _Layout, java: str) -> None:
    """A throw-away CA and a server keystore whose certificate names IP 127.0.0.1 and localhost."""
    if lay.keystore.is_file() and lay.ca_pem.is_file():
        return
    keytool = _keytool(java)
    shutil.rmtree(lay.tls, ignore_errors=True)
    lay.tls.mkdir(parents=True)
    ca_store, pw = lay.tls / "ca.p12", TLS_STORE_PASSWORD
    common = ["-storetype", "PKCS12", "-storepass", pw, "-keypass", pw, "-noprompt"]
    gen = ["-genkeypair", "-keyalg", "EC", "-groupname", "secp256r1", "-validity", "3650"]

    def run(*args: str, stdin: bytes | None = None) -> bytes:
        proc = subprocess.run([keytool, *args], input=stdin, capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise CassandraNodeError(f"keytool {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    run(*gen, "-alias", "ca", "-dname", "CN=Keyart test CA", "-ext", "bc:c",
        "-keystore", str(ca_store), *common)  # fmt: skip
    ca_pem = run("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), *common)
    lay.ca_pem.write_bytes(ca_pem)
    ks = str(lay.keystore)
    run(*gen, "-alias", "node", "-dname", f"CN={HOST}", "-keystore", ks, *common)
    csr = run("-certreq", "-alias", "node", "-keystore", ks, *common)
    cert = run("-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-validity", "3650",
               "-ext", f"SAN=IP:{HOST},DNS:localhost", "-ext", "KU=digitalSignature,keyEncipherment",
               "-ext", "EKU=serverAuth", *common, stdin=csr)  # fmt: skip
    run("-importcert", "-alias", "ca", "-file", str(lay.ca_pem), "-keystore", ks, *common)
    run("-importcert", "-alias", "node", "-keystore", ks, *common, stdin=cert)
    ca_store.unlink()


def _jvm_command(java: str, lib: Path, lay: _Layout, st: _State) -> list[str]:
    cmd: list[str] = []
    # As root, Cassandra's mlockall() pins every mapped page (RSS ~0.9 GB instead of ~0.45 GB).
    # Dropping CAP_IPC_LOCK makes it fail harmlessly ("Unable to lock JVM memory (ENOMEM)").
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        cmd += [setpriv, "--bounding-set", "-ipc_lock"]
    heap_min = "512m" if _size_mb(st.heap) >= 512 else st.heap
    # C1 only (-XX:TieredStopAtLevel=1): about 1 s faster to CQL on 2 cores and less CPU taken from
    # tests running beside it; peak throughput does not matter for a dev/test node.
    cmd += [java, f"-Xms{heap_min}", f"-Xmx{st.heap}", "-Xss256k", "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled",
            "-XX:MaxTenuringThreshold=1", "-XX:+ExitOnOutOfMemoryError", "-XX:TieredStopAtLevel=1"]  # fmt: skip
    cmd += JVM17_MODULE_FLAGS
    jamm = sorted(lib.glob("jamm-*.jar"))
    if jamm:
        cmd.append(f"-javaagent:{jamm[0]}")
    (lay.home / "triggers").mkdir(exist_ok=True)
    cmd += [
        "-Djava.net.preferIPv4Stack=true",
        "-Djdk.attach.allowAttachSelf=true",
        "-Dio.netty.tryReflectionSetAccessible=true",
        "-Dio.netty.allocator.useCacheForAllThreads=true",
        "-Dio.netty.allocator.maxOrder=11",
        "-Dchronicle.analytics.disable=true",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.config={lay.yaml.as_uri()}",
        f"-Dlogback.configurationFile={lay.logback}",
        f"-Dcassandra.logdir={lay.logs}",
        f"-Dcassandra.triggers_dir={lay.home / 'triggers'}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-Dcassandra.shutdown_announce_in_ms=0",
        "-cp",
        f"{lib}/*",
        DAEMON_CLASS,
    ]
    return cmd


def _size_mb(size: str) -> int:
    m = re.fullmatch(r"(\d+)([mMgG])", size)
    if not m:
        raise CassandraNodeError(f"heap size {size!r}: use e.g. 768m or 1g")
    return int(m.group(1)) * (1024 if m.group(2) in "gG" else 1)


# ---------------------------------------------------------------- processes


def _read_pid(lay: _Layout) -> int | None:
    try:
        return int(lay.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_our_node(pid: int, lay: _Layout) -> bool:
    """The pid runs CassandraDaemon with this home's cassandra.yaml (and is no zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return DAEMON_CLASS in args and f"-Dcassandra.config={lay.yaml.as_uri()}" in args


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        return False
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()
    return True


def _probe_cql(info: NodeInfo, timeout: float) -> bool:
    """One CQL round trip (login included when auth is on)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    kwargs: dict[str, Any] = {
        "contact_points": [info.host],
        "port": info.port,
        "connect_timeout": timeout,
        "control_connection_timeout": timeout,
        "execution_profiles": {
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout)
        },
    }
    if info.auth:
        kwargs["auth_provider"] = PlainTextAuthProvider(username=info.username, password=info.password)
    ctx = info.ssl_context()
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    cluster = Cluster(**kwargs)
    try:
        session = cluster.connect()
        return session.execute("SELECT release_version FROM system.local").one() is not None
    except Exception:
        return False
    finally:
        cluster.shutdown()


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def _wait_ready(info: NodeInfo, lay: _Layout, deadline: float, *, launched: float) -> float:
    """Seconds from launch until CQL answered; raises NodeStartError if the JVM dies or time runs out."""
    try:
        import cassandra.cluster  # noqa: F401

        have_driver = True
    except ImportError:
        have_driver = False
        log.warning("cassandra-driver not installed: readiness = log line + TCP connect")
    drv_log = logging.getLogger("cassandra")
    old_level = drv_log.level
    drv_log.setLevel(logging.CRITICAL)  # connection refusals while the node boots are expected
    try:
        while time.monotonic() < deadline:
            if not _alive(info.pid):
                raise NodeStartError(
                    f"Cassandra exited during start-up; {lay.system_log}:\n{_tail(lay.system_log)}\n"
                    f"{lay.stdout_log}:\n{_tail(lay.stdout_log, 10)}"
                )
            if _tcp_open(info.port):
                if have_driver:
                    if _probe_cql(info, timeout=5.0):
                        return time.monotonic() - launched
                elif "Starting listening for CQL clients" in _tail(lay.system_log, 400):
                    return time.monotonic() - launched
            time.sleep(0.5)
    finally:
        drv_log.setLevel(old_level)
    raise NodeStartError(
        f"CQL did not answer on {HOST}:{info.port} in time; {lay.system_log}:\n{_tail(lay.system_log)}"
    )


def _info(lay: _Layout, st: _State, pid: int, *, started: bool, ready: float = 0.0) -> NodeInfo:
    return NodeInfo(
        host=HOST,
        port=st.native_port,
        storage_port=st.storage_port,
        pid=pid,
        home=lay.home,
        version=st.version,
        auth=st.auth,
        tls=st.tls,
        username=SUPERUSER[0] if st.auth else None,
        password=SUPERUSER[1] if st.auth else None,
        ca_file=lay.ca_pem if st.tls else None,
        log_file=lay.system_log,
        started=started,
        ready_seconds=ready,
    )


# ---------------------------------------------------------------- public API


def start_node(
    home: Path | None = None,
    *,
    auth: bool = False,
    tls: bool = False,
    heap: str = "1g",
    version: str = CASSANDRA_VERSION,
    native_port: int | None = None,
    storage_port: int | None = None,
    timeout: float = 180.0,
    cache_dir: Path | None = None,
    maven_repo: Path | None = None,
) -> NodeInfo:
    """Start (or find running) the node of ``home`` and wait until CQL answers.

    The first start fetches the jars with Maven and picks free loopback ports, kept in
    ``home/node.json`` with the options so later starts reuse the ports and the data. If the
    home's node is already running with the same options it is returned as is
    (``started=False``); with other options, CassandraNodeError (stop it first).
    """
    lay = _Layout((home or default_home()).resolve())
    lay.home.mkdir(parents=True, exist_ok=True)
    with _locked(lay.home / ".lock"):
        st = _load_state(lay)
        pid = _read_pid(lay)
        if pid is not None and _is_our_node(pid, lay):
            if st is None or (st.auth, st.tls, st.version) != (auth, tls, version):
                raise CassandraNodeError(f"the node of {lay.home} (pid {pid}) runs with other options; stop it first")
            info = _info(lay, st, pid, started=False)
            _wait_ready(info, lay, time.monotonic() + timeout, launched=time.monotonic())
            return info
        lay.pid_file.unlink(missing_ok=True)

        java = find_java()
        lib, _took = fetch_jars(version, cache_dir, maven_repo=maven_repo)

        if st is None:
            used: set[int] = set()
            native = native_port or _free_port(used)
            used.add(native)
            st = _State(version=version, native_port=native, storage_port=storage_port or _free_port(used))
        else:
            st.native_port = native_port or st.native_port
            st.storage_port = storage_port or st.storage_port
        if st.version != version and (lay.home / "data").exists():
            log.warning("home %s holds data of Cassandra %s; starting %s on it", lay.home, st.version, version)
        st.version, st.auth, st.tls, st.heap = version, auth, tls, heap
        for port in (st.native_port, st.storage_port):
            if not _port_free(port):
                raise CassandraNodeError(
                    f"port {port} of {lay.state} is taken by another process; free it, or remove "
                    f"{lay.state} to pick new ports"
                )

        for sub in ("conf", "logs", "data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            (lay.home / sub).mkdir(parents=True, exist_ok=True)
        if tls:
            _make_tls(lay, java)
        lay.yaml.write_text(_cassandra_yaml(lay, st))
        lay.logback.write_text(_logback_xml(lay))
        _save_state(lay, st)

        cmd = _jvm_command(java, lib, lay, st)
        (lay.conf / "command.txt").write_text(shlex.join(cmd) + "\n")
        launched = time.monotonic()
        with open(lay.stdout_log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=lay.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the starting terminal does not reach it
            )
        _CHILDREN[proc.pid] = proc
        lay.pid_file.write_text(f"{proc.pid}\n")
        info = _info(lay, st, proc.pid, started=True)
        try:
            ready = _wait_ready(info, lay, launched + timeout, launched=launched)
        except BaseException:
            _kill(proc.pid, lay, grace=5.0)
            raise
        return _info(lay, st, proc.pid, started=True, ready=ready)


def _kill(pid: int, lay: _Layout, grace: float) -> bool:
    _signal(pid, signal.SIGTERM)
    clean = _wait_exit(pid, grace)
    if not clean:
        _signal(pid, signal.SIGKILL)
        _wait_exit(pid, 30.0)
    lay.pid_file.unlink(missing_ok=True)
    return clean


def stop_node(home: Path | None = None, *, timeout: float = 60.0) -> bool:
    """Stop the node of ``home`` by its PID file: SIGTERM, SIGKILL after ``timeout`` s.

    Returns True if a node was running. A stale PID file (process gone, or the PID now runs
    something else) is removed and nothing is signalled.
    """
    lay = _Layout((home or default_home()).resolve())
    pid = _read_pid(lay)
    if pid is None:
        return False
    if not _is_our_node(pid, lay):
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait()
        lay.pid_file.unlink(missing_ok=True)
        return False
    if not _kill(pid, lay, grace=timeout):
        log.warning("Cassandra pid %d ignored SIGTERM for %.0f s; killed", pid, timeout)
    return True


def node_status(home: Path | None = None) -> NodeInfo | None:
    """The running node of ``home``, or None (no CQL probe)."""
    lay = _Layout((home or default_home()).resolve())
    pid = _read_pid(lay)
    st = _load_state(lay)
    if pid is None or st is None or not _is_our_node(pid, lay):
        return None
    return _info(lay, st, pid, started=False)


def node_config(home: Path | None = None) -> NodeInfo | None:
    """What ``home/node.json`` says (pid 0 when not running), or None if never started."""
    lay = _Layout((home or default_home()).resolve())
    st = _load_state(lay)
    if st is None:
        return None
    running = node_status(lay.home)
    return _info(lay, st, running.pid if running else 0, started=False)


# ---------------------------------------------------------------- CLI


def _env_lines(info: NodeInfo) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in info.env().items()]


def _cmd_start(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    cache = Path(args.cache_dir) if args.cache_dir else None
    t0 = time.monotonic()
    find_java()  # fail fast, before any message, when a tool is missing
    lib = (cache or default_cache_dir()) / args.version / "lib"
    if not (lib / f"cassandra-all-{args.version}.jar").is_file():
        _require_mvn()
        print(f"fetching cassandra-all {args.version} and its dependencies with Maven into {lib} ...", flush=True)
    info = start_node(
        home,
        auth=args.auth,
        tls=args.tls,
        heap=args.heap,
        version=args.version,
        native_port=args.port,
        storage_port=args.storage_port,
        timeout=args.timeout,
        cache_dir=cache,
        maven_repo=Path(args.maven_repo) if args.maven_repo else None,
    )
    total = time.monotonic() - t0
    if info.started:
        print(
            f"Cassandra {info.version} up on {info.host}:{info.port} (pid {info.pid}): "
            f"CQL answered {info.ready_seconds:.1f} s after launch, {total:.1f} s in all"
        )
    else:
        print(f"Cassandra {info.version} already running on {info.host}:{info.port} (pid {info.pid})")
    print(f"home {info.home}, log {info.log_file}")
    if info.auth:
        print(f"auth: PasswordAuthenticator, superuser {info.username}/{info.password}")
    if info.tls:
        print(f"tls: client encryption required; CA {info.ca_file}")
    print("Point Keyart at it with:")
    print("  " + " ".join(f"{k}={shlex.quote(v)}" for k, v in info.env().items()))
    print(f'(or: eval "$(python -m keyart.app.cassandra_node env{" --home " + args.home if args.home else ""})")')
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    pid = node_status(home)
    if stop_node(home, timeout=args.timeout):
        print(f"stopped Cassandra (pid {pid.pid if pid else '?'})")
    else:
        print("no Cassandra running for this home")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    info = node_status(home)
    if info is None:
        print(f"stopped ({(home or default_home()).resolve()})")
        return 3
    rss = _rss_mb(info.pid)
    rss_txt = f", RSS {rss:.0f} MiB" if rss is not None else ""
    print(
        f"running: Cassandra {info.version} on {info.host}:{info.port} (storage {info.storage_port}), "
        f"pid {info.pid}{rss_txt}, auth={'on' if info.auth else 'off'}, tls={'on' if info.tls else 'off'}"
    )
    print(f"home {info.home}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    info = node_config(home)
    if info is None:
        print("no node in this home yet: run `python -m keyart.app.cassandra_node start`", file=sys.stderr)
        return 3
    if info.pid == 0:
        print("# warning: the node is not running", file=sys.stderr)
    print("\n".join(_env_lines(info)))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keyart.app.cassandra_node", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="node directory (default: var/cassandra of the checkout)")
    s = sub.add_parser("start", parents=[common], help="start the node in the background and wait for CQL")
    s.add_argument("--auth", action="store_true", help="PasswordAuthenticator, superuser cassandra/cassandra")
    s.add_argument("--tls", action="store_true", help="client TLS with a generated test CA")
    s.add_argument("--heap", default="1g", help="max heap (default 1g; initial 512m)")
    s.add_argument("--version", default=CASSANDRA_VERSION, help=f"cassandra-all version (default {CASSANDRA_VERSION})")
    s.add_argument("--port", type=int, help="native transport port (default: free port, then kept)")
    s.add_argument("--storage-port", type=int, help="storage port (default: free port, then kept)")
    s.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for CQL (default 180)")
    s.add_argument("--cache-dir", help="jar cache (default .cache/cassandra of the checkout)")
    s.add_argument("--maven-repo", help="Maven local repository (default ~/.m2/repository)")
    s.set_defaults(func=_cmd_start)
    t = sub.add_parser("stop", parents=[common], help="stop the node started in this home")
    t.add_argument("--timeout", type=float, default=60.0, help="seconds before SIGKILL (default 60)")
    t.set_defaults(func=_cmd_stop)
    sub.add_parser("status", parents=[common], help="running or not (exit 3 when stopped)").set_defaults(
        func=_cmd_status
    )
    sub.add_parser("env", parents=[common], help="print export lines of the KEYART_* settings").set_defaults(
        func=_cmd_env
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args))
    except MissingToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CassandraNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
