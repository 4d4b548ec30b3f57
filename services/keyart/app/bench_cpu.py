"""Where a served page's CPU goes across a server's processes, for `make bench`.

A Ray Serve tree is many processes: the replicas that run pages, their decision-log
writer processes, Serve's HAProxy ingress, Serve's controller and proxy actors, and
Ray's own system processes (GCS, raylet, agents). `make bench` divides all of their
CPU by the pages served; this module says which of them it was, so the gap between
Ray Serve and the bare server is measured per part on every run, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

# (role, what its command line holds), first match wins.
_ROLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("log_writer", ("keyart.adapters.decision_log.process",)),
    ("serve_replica", ("ServeReplica",)),
    ("haproxy", ("haproxy",)),
    ("serve_control", ("ServeController", "ProxyActor", "HAProxyManager")),
    ("bare_server", ("serve-bare", "keyart.app.bench_floor bare")),
    ("ray_system", ("gcs_server", "raylet", "DashboardAgent", "dashboard", "ray/_private", "ray::", "ray/")),
)


def process_role(cmdline: str) -> str:
    """The part of a server a process is, from its command line ("launcher" for the rest:
    the `keyart up` process that started Ray and waits)."""
    for role, marks in _ROLES:
        if any(mark in cmdline for mark in marks):
            return role
    return "launcher"


def processes_under(root_pids: Iterable[int]) -> list[psutil.Process]:
    """These processes and all their live descendants (a root that ended is left out)."""
    out: list[psutil.Process] = []
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
            out += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return out


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds so far of every live process under some roots, with each one's role."""

    by_pid: Mapping[int, tuple[str, float]]

    @classmethod
    def sample(cls, root_pids: Iterable[int]) -> TreeCpu:
        out: dict[int, tuple[str, float]] = {}
        for proc in processes_under(root_pids):
            try:
                times = proc.cpu_times()
                out[proc.pid] = (process_role(" ".join(proc.cmdline())), times.user + times.system)
            except psutil.Error:  # ended in between
                continue
        return cls(out)

    def seconds_by_role_since(self, earlier: TreeCpu) -> dict[str, float]:
        """CPU seconds per role between `earlier` and this sample: a process that started
        in between counts from its start; one that ended in between is not counted."""
        out: dict[str, float] = {}
        for pid, (role, seconds) in self.by_pid.items():
            before = earlier.by_pid.get(pid)
            spent = seconds - before[1] if before is not None and before[0] == role else seconds
            out[role] = out.get(role, 0.0) + max(0.0, spent)
        return out


__all__ = ["TreeCpu", "process_role", "processes_under"]
