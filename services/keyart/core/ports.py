"""What the page service needs from the outside, as Protocols (the adapters implement them).

The decision core never imports an adapter: the composition root (`keyart.app.runtime`)
hands it a member lookup, a decision log and a metrics sink that fit these shapes.
"""

from __future__ import annotations

from typing import Protocol

from keyart.domain import Impression, LoggedPage, MemberFeatures, Outcome, Selection


class MemberLookup(Protocol):
    """Online member features (Feast in production)."""

    def get(self, member_id: str) -> MemberFeatures | None:
        """The member's features, or None when the store does not know the member."""
        ...


class DecisionSink(Protocol):
    """Where decisions and outcomes go; submitting never blocks the page."""

    def submit_page(self, page: LoggedPage) -> bool:
        """A page's impressions; True when the log took them."""
        ...

    def submit_outcomes(self, records: list[Outcome]) -> bool: ...


class DecisionLog(DecisionSink, Protocol):
    """A decision sink that is also a running service: flushed, watched, closed."""

    def submit_impressions(self, records: list[Impression]) -> bool:
        """Impressions built elsewhere (tools, replays); True when the log took them."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool: ...

    def stats(self) -> dict[str, int | bool]: ...

    def health(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


class PageMetrics(Protocol):
    """Request-path observations (counted in memory, exported elsewhere)."""

    def observe_page(self, policy: str, selections: list[Selection], seconds: float) -> None: ...

    def observe_features(self, seconds: float, ok: bool) -> None: ...

    def observe_outcomes(self, accepted: int) -> None: ...


class NoMetrics:
    """PageMetrics that records nothing (tests, batch tools)."""

    def observe_page(self, policy: str, selections: list[Selection], seconds: float) -> None:
        pass

    def observe_features(self, seconds: float, ok: bool) -> None:
        pass

    def observe_outcomes(self, accepted: int) -> None:
        pass
