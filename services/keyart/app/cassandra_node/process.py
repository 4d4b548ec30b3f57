"""Start, stop and status of a node: the JVM process, its PID file and CQL readiness."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from keyart.app.cassandra_node.common import (
    CASSANDRA_VERSION,
    DAEMON_CLASS,
    HOST,
    SUPERUSER,
    CassandraNodeError,
    NodeInfo,
    NodeStartError,
    _Layout,
    _locked,
    _State,
    _tail,
    default_home,
)
from keyart.app.cassandra_node.config import (
    _cassandra_yaml,
    _free_port,
    _jvm_command,
    _load_state,
    _logback_xml,
    _make_tls,
    _port_free,
    _save_state,
)
from keyart.app.cassandra_node.jars import fetch_jars, find_java

log = logging.getLogger(__name__)

# Nodes started by this process, so stop_node() can reap its own child (no zombie).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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
