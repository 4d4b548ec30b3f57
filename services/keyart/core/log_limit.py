"""Log lines that cannot flood: at most one per key per interval, with the count suppressed.

Under load a failing dependency fails every page; one line per page would bury the log
and cost CPU. The first occurrence logs at once; later ones within `interval_s` are
counted and reported with the next line. Metrics still count every occurrence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LimitedLog:
    """One logger's rate-limited lines, keyed by what went wrong (a reason, not a member)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` logged within the interval. True if it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" (and {suppressed} more in the last {self.interval_s:g} s)"
        self.logger.log(level, message, *args)
        return True

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, message, *args)
