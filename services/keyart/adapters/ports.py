"""Loopback ports to hand to a server that binds them later.

A port the kernel hands out for `bind(port 0)` comes from the ephemeral range, the same
range every outgoing connection takes its local port from. Between choosing the port and
the server binding it, Ray's start-up opens dozens of connections, and one of them took a
chosen port in a CI run (HAProxy: "cannot bind socket (Address already in use)"). Ports
below the ephemeral range and above Ray's worker ports (10002-19999) are never taken that
way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 20000  # above Ray's default worker ports (min_worker_port 10002 .. max_worker_port 19999)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_random = random.Random()


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port free on host now, outside the kernel's ephemeral range when there is room."""
    highest = _ephemeral_low() - 1
    if highest - _LOWEST >= 1000:
        for _ in range(200):
            port = _random.randint(_LOWEST, highest)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket() as s:  # no room below the ephemeral range: the kernel's choice
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
