"""Ports handed to servers that bind them later come from outside the ephemeral range,
where no outgoing connection (Ray opens dozens while it starts) can take them first."""

from __future__ import annotations

import socket
from pathlib import Path

from keyart.adapters.ports import free_loopback_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_loopback_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= p < low for p in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped(monkeypatch) -> None:
    import random

    from keyart.adapters import ports

    monkeypatch.setattr(ports, "_random", random.Random(5))
    first = free_loopback_port()
    monkeypatch.setattr(ports, "_random", random.Random(5))
    monkeypatch.setattr(ports, "_handed_out", set())
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))  # someone else holds the port the same draw would give
        assert free_loopback_port() != first
