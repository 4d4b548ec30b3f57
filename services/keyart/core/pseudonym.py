"""Keyed pseudonyms of member ids for the decision log (``KEYART_LOG_MEMBER_KEY``).

The log then holds no member id: a record says which pseudonym saw which image. The same
member always gets the same pseudonym under one key, so training, replay evaluation and
the experiments' per-member bootstrap work unchanged; without the key the pseudonym
cannot be turned back into, or recomputed from, a member id (HMAC-SHA256). Serving
itself still uses the real id (features, stable choices, experiment cells).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

PREFIX = "ps-"  # tells a pseudonym from a raw id in a log that holds both (before/after the key)


def keyed_pseudonym(key: bytes) -> Callable[[str], str]:
    """A function from member id to ``ps-`` + 32 hex digits (128 bits of HMAC-SHA256)."""
    if len(key) < 16:
        raise ValueError("a pseudonym key needs at least 16 bytes")

    def pseudonym(member_id: str) -> str:
        return PREFIX + hmac.new(key, member_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    return pseudonym
