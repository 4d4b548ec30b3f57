"""`keyart up --detach` and `keyart down`: a server that outlives the command that started it.

The local Ray instance belongs to its driver process, so a detached server must be a
driver of its own: `--detach` starts a blocking `keyart up` in a new session (its own
process group), with its output in `<data dir>/run/keyart-up.log`, waits until it
answers SERVING, and returns.

A blocking `keyart up` (detached or in a terminal, `make run`) records itself in
`<data dir>/run/keyart-up.pid` (JSON: pid, start time, port) while it runs and
removes the file when it stops, so `keyart down` finds it either way. `keyart down`
sends SIGINT (what Ctrl-C sends: Serve and Ray shut down cleanly), then SIGTERM and
SIGKILL after timeouts, to the server's process group when the server leads one (a
detached server always does), else to the server alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from keyart.errors import KeyartError
from keyart.settings import KeyartSettings

PID_FILE = "keyart-up.pid"
LOG_FILE = "keyart-up.log"


@dataclass(frozen=True)
class ServerRecord:
    """A running `keyart up`, as recorded in the PID file."""

    pid: int
    create_time: float  # the process's start time: a recycled pid does not match it
    port: int
    # Its start in seconds since boot (Linux), which no wall-clock step moves: create_time
    # is epoch-based, and an NTP step between the server's reading and a later one (a
    # long-running caller, a throttled VM) made a live server look stale, its PID file
    # removed, and `--detach` wait for a record that was gone. None in older files.
    since_boot: float | None = None


def _since_boot(pid: int) -> float | None:
    """The process's start in seconds since boot, from /proc (None where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_dir(settings: KeyartSettings) -> Path:
    return settings.data_dir / "run"


def pid_path(settings: KeyartSettings) -> Path:
    return run_dir(settings) / PID_FILE


def log_path(settings: KeyartSettings) -> Path:
    return run_dir(settings) / LOG_FILE


def _alive(record: ServerRecord) -> bool:
    """The recorded process still runs (the same one: its start time matches)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        since_boot = _since_boot(record.pid) if record.since_boot is not None else None
        if since_boot is not None and record.since_boot is not None:
            return abs(since_boot - record.since_boot) < 0.05
        return abs(proc.create_time() - record.create_time) < 1.0
    except psutil.Error:
        return False


def read_record(settings: KeyartSettings) -> tuple[ServerRecord | None, str]:
    """The running server, or (None, why not). A stale PID file is removed."""
    path = pid_path(settings)
    try:
        record = ServerRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None, f"no PID file {path}"
    except (ValueError, TypeError) as exc:
        path.unlink(missing_ok=True)
        return None, f"unreadable PID file {path} removed ({exc})"
    if not _alive(record):
        path.unlink(missing_ok=True)
        return None, f"stale PID file {path} removed (pid {record.pid} is not running)"
    return record, ""


def refuse_if_running(settings: KeyartSettings) -> None:
    record, _ = read_record(settings)
    if record is not None:
        raise KeyartError(
            f"a server is already running for {settings.data_dir} (pid {record.pid}, port {record.port}); "
            "stop it with `keyart down`"
        )


@contextmanager
def recorded(settings: KeyartSettings, port: int) -> Iterator[ServerRecord]:
    """Record this process as the data dir's server while the block runs."""
    refuse_if_running(settings)
    me = psutil.Process()
    record = ServerRecord(pid=me.pid, create_time=me.create_time(), port=port, since_boot=_since_boot(me.pid))
    path = pid_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{me.pid}")
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    tmp.replace(path)
    try:
        yield record
    finally:
        current, _ = read_record(settings)
        if current is not None and current.pid == me.pid:
            path.unlink(missing_ok=True)


def serving_status(address: str, timeout_s: float = 2.0) -> str:
    """grpc.health.v1 status at address ("SERVING", "NOT_SERVING", or the RPC error's code)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def start_detached(
    settings: KeyartSettings, say: Callable[[str], None], timeout_s: float = 300.0
) -> ServerRecord:
    """Start `keyart up` in its own session and return once it is SERVING.

    Raises KeyartError (after stopping what it started) when the server exits early
    or is not SERVING within timeout_s.
    """
    refuse_if_running(settings)
    log = log_path(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "keyart.app.cli.main", "up", "--port", str(settings.grpc_port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KEYART_DATA_DIR": str(settings.data_dir.resolve()),
           "KEYART_FEATURE_REPO_DIR": str(settings.feature_repo_dir.resolve())}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    address = f"127.0.0.1:{settings.grpc_port}"
    say(f"starting the server in the background (pid {proc.pid}, log {log}) ...")
    deadline = time.monotonic() + timeout_s
    status = ""
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KeyartError(f"the server exited with status {proc.returncode} before serving; "
                                  f"the end of {log}:\n{_tail(log)}")
            record, _ = read_record(settings)
            if record is not None and record.pid == proc.pid:
                # The server's own READY line first: health can say SERVING a moment before
                # the server has left its start-up, and a stop in that moment would skip the
                # drain. Behind the TLS front a plaintext health check cannot connect (and
                # mutual TLS wants a client certificate): the READY line alone says it.
                ready = "READY keyart.v1" in _tail(log, 200)
                status = ("SERVING" if settings.tls_cert_file else serving_status(address)) if ready else "starting"
                if status == "SERVING":
                    return record
            time.sleep(0.5)
    except BaseException:
        _stop_child(proc)
        raise
    _stop_child(proc)
    raise KeyartError(f"the server was not SERVING on {address} after {timeout_s:.0f} s "
                      f"(last: {status or 'starting'}); "
                      f"the end of {log}:\n{_tail(log)}")


def _stop_child(proc: subprocess.Popen) -> None:
    stop_process(proc.pid, timeout_s=30.0)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of an exited leader still count for killpg; ignore them.
    return any(p.info["status"] != psutil.STATUS_ZOMBIE for p in psutil.process_iter(["status"])
               if _pgid(p.pid) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def stop_process(pid: int, timeout_s: float = 60.0, kill_after_s: float = 10.0) -> str:
    """Stop a `keyart up`: SIGINT, then SIGTERM, then SIGKILL; returns the signal that did it.

    SIGINT goes to the server alone, so it can shut Serve and Ray down in order (sent to
    Ray's processes too, it would kill the Serve controller under it). When the server
    leads its own process group (a detached server always does), SIGTERM and SIGKILL go
    to the whole group, and the stop waits for the group to be empty, so nothing it
    started (Ray, HAProxy) is left behind.
    """
    group = _pgid(pid) == pid

    def gone() -> bool:
        return not _group_alive(pid) if group else _exited(pid)

    _signal(pid, signal.SIGINT, group=False)
    if _wait(lambda: _exited(pid), timeout_s) and _wait(gone, kill_after_s):
        return signal.SIGINT.name
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal(pid, sig, group)
        if _wait(gone, kill_after_s):
            return sig.name
    return "still running"


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _exited(pid: int) -> bool:
    return not psutil.pid_exists(pid) or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def stop_server(settings: KeyartSettings, timeout_s: float = 60.0) -> dict[str, object]:
    """`keyart down`: stop the data dir's server; says so when nothing is running."""
    record, why = read_record(settings)
    if record is None:
        return {"stopped": False, "message": f"nothing is running for {settings.data_dir} ({why})"}
    how = stop_process(record.pid, timeout_s=timeout_s)
    if how == "still running":
        raise KeyartError(f"pid {record.pid} did not stop after SIGINT, SIGTERM and SIGKILL")
    pid_path(settings).unlink(missing_ok=True)
    return {"stopped": True, "pid": record.pid, "port": record.port, "signal": how,
            "message": f"stopped the server on port {record.port} (pid {record.pid}, {how})"}


__all__ = [
    "ServerRecord",
    "log_path",
    "pid_path",
    "read_record",
    "recorded",
    "refuse_if_running",
    "serving_status",
    "start_detached",
    "stop_process",
    "stop_server",
]
