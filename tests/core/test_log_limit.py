"""Rate-limited log lines: the first at once, then one per interval with the count suppressed."""

from __future__ import annotations

import logging

from keyart.core.log_limit import LimitedLog


def test_one_line_per_key_per_interval(caplog) -> None:
    now = [0.0]
    limited = LimitedLog(logging.getLogger("t"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        assert limited.warning("timeout", "features timed out after %d ms", 50)
        for _ in range(99):
            assert not limited.warning("timeout", "features timed out after %d ms", 50)
        assert limited.warning("other", "another reason")  # keys are independent
        now[0] = 10.5
        assert limited.warning("timeout", "features timed out after %d ms", 50)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["features timed out after 50 ms", "another reason",
                     "features timed out after 50 ms (and 99 more in the last 10 s)"]
    assert all(r.exc_info is None for r in caplog.records)
