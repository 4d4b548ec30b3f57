"""Stable randomness: the same member sees the same image for a title within a window.

The uniform number behind a choice is a hash of (member, title, time window, salt),
so it is reproducible (replay, debugging) yet spread uniformly across members,
which keeps the logged propensity exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

_SCALE = float(2**64)


def stable_uniform(*parts: str) -> float:
    """A number in [0, 1) determined by parts, uniform over distinct inputs."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def stable_uniforms(first: str, varying: Iterable[str], *rest: str) -> list[float]:
    """`stable_uniform(first, v, *rest)` for each v of `varying` (a page's titles), with
    the parts every title shares encoded once."""
    head, tail = (first + "\x1f").encode(), "".join("\x1f" + r for r in rest).encode()
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(head + v.encode() + tail, digest_size=8).digest(), "big") / _SCALE for v in varying]


def time_window(when: datetime, window_hours: float) -> str:
    """Index of the stability window containing `when`."""
    return str(int(when.timestamp() // (window_hours * 3600.0)))
