"""`keyart up --detach` / `keyart down` bookkeeping: the PID file and the stop sequence (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from keyart.app import detach
from keyart.errors import KeyartError
from keyart.settings import KeyartSettings

# A stand-in server: leads its own session, starts a child in its group, and exits on
# SIGINT unless told to ignore it (then only SIGTERM or SIGKILL stop it).
SERVER = """
import signal, subprocess, sys, time
if sys.argv[1] == "ignore-int":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
try:
    print("up", flush=True)  # inside the try: a SIGINT right after "up" must still kill the child
    time.sleep(120)
except KeyboardInterrupt:
    child.kill()
"""


def _spawn(mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
    return proc


def _settings(tmp_path) -> KeyartSettings:
    return KeyartSettings(data_dir=tmp_path)


def test_nothing_running_is_said_plainly(tmp_path):
    out = detach.stop_server(_settings(tmp_path))
    assert out["stopped"] is False and "nothing is running" in str(out["message"])
    assert "no PID file" in str(out["message"])


def test_the_record_lives_as_long_as_the_server_and_blocks_a_second_one(tmp_path):
    s = _settings(tmp_path)
    with detach.recorded(s, 9123) as record:
        assert detach.pid_path(s).is_file()
        assert detach.read_record(s)[0] == record
        with pytest.raises(KeyartError, match="already running"):
            detach.refuse_if_running(s)
    assert not detach.pid_path(s).exists()


def test_a_stale_record_is_removed(tmp_path):
    s = _settings(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    detach.pid_path(s).parent.mkdir(parents=True)
    detach.pid_path(s).write_text(f'{{"pid": {proc.pid}, "create_time": 1.0, "port": 1}}')
    record, why = detach.read_record(s)
    assert record is None and "stale" in why and not detach.pid_path(s).exists()
    detach.refuse_if_running(s)  # does not raise


def test_a_wall_clock_step_does_not_make_a_live_server_stale(tmp_path):
    """The record's start time since boot decides: a live server whose epoch start time is
    off by a clock step (here 30 s) stays recorded; one whose boot-relative start differs
    (a recycled pid) is stale."""
    import dataclasses
    import json

    s = _settings(tmp_path)
    proc = _spawn("stop-on-int")
    try:
        live = detach.ServerRecord(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time() + 30.0,
                                   port=1, since_boot=detach._since_boot(proc.pid))
        assert live.since_boot is not None
        detach.pid_path(s).parent.mkdir(parents=True)
        detach.pid_path(s).write_text(json.dumps(dataclasses.asdict(live)))
        assert detach.read_record(s)[0] == live
        recycled = dataclasses.replace(live, since_boot=live.since_boot - 5.0)
        detach.pid_path(s).write_text(json.dumps(dataclasses.asdict(recycled)))
        record, why = detach.read_record(s)
        assert record is None and "stale" in why
    finally:
        os.killpg(proc.pid, 9)  # the stand-in and its child
        proc.wait()


def _group_empty(pgid: int) -> bool:
    """No live process (zombies aside: init may be slow to reap them) left in the group."""
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, PermissionError):
            pass
    return True


def test_down_interrupts_the_server_and_empties_its_group(tmp_path):
    proc = _spawn("normal")
    try:
        started = time.monotonic()
        assert detach.stop_process(proc.pid, timeout_s=10, kill_after_s=5) == "SIGINT"
        assert time.monotonic() - started < 10
        assert _group_empty(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_down_escalates_when_sigint_is_ignored(tmp_path):
    s = _settings(tmp_path)
    proc = _spawn("ignore-int")
    try:
        p = psutil.Process(proc.pid)
        detach.pid_path(s).parent.mkdir(parents=True)
        detach.pid_path(s).write_text(f'{{"pid": {proc.pid}, "create_time": {p.create_time()}, "port": 7}}')
        out = detach.stop_server(s, timeout_s=1.0)
        assert out["stopped"] is True and out["signal"] == "SIGTERM"
        assert not detach.pid_path(s).exists() and _group_empty(proc.pid)
        assert "nothing is running" in str(detach.stop_server(s)["message"])
    finally:
        proc.kill()
        proc.wait()
