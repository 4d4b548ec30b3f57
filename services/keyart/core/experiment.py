"""Online experiments: members split into cells, and shadow models scored beside them.

An experiment is plain data (the adapter in `keyart.adapters.experiments` reads and
checks its file). A member's cell is a stable hash of (experiment id, member id), so
a member never changes cell while the experiment runs, whatever the replica. Shadows
score every page of the experiment; what they would have done is logged, never shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyart.core.stable import stable_uniform

# A cell's `model` naming the promoted model, whichever it is when the page is served.
CURRENT_MODEL = "current"


@dataclass(frozen=True)
class Cell:
    """A share of the members and what serves them."""

    name: str
    share: float  # of the experiment's members, in (0, 1]; a cell's shares sum to 1
    model: str = CURRENT_MODEL  # a model version, or CURRENT_MODEL
    policy: str = ""  # a policy name overriding the serving one ("": the serving policy)


@dataclass(frozen=True)
class Shadow:
    """A candidate model scored on the experiment's pages, with its own policy."""

    name: str
    model: str  # a model version
    policy: str = "greedy"  # the policy its probabilities are those of
    # Share of the experiment's pages it scores (a stable hash of the request id): bounds its
    # CPU; the pages it skips are chosen independently of members' behaviour, so its
    # estimates stay unbiased on the pages it scored.
    share: float = 1.0

    def scores(self, request_id: str) -> bool:
        return self.share >= 1.0 or stable_uniform(request_id, self.name, "shadow") < self.share


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    cells: tuple[Cell, ...]
    control: str  # the cell every other cell is compared with
    shadows: tuple[Shadow, ...] = ()
    revision: int = 1  # bumped by each accepted change while it runs

    def cell_for(self, member_id: str) -> Cell:
        """The member's cell: the cumulative shares cut one stable uniform number."""
        return cell_of(self.cells, stable_uniform(self.experiment_id, member_id, "cell"))

    def model_versions(self) -> list[str]:
        """Every explicit model version the experiment needs loaded."""
        versions = [c.model for c in self.cells if c.model != CURRENT_MODEL] + [s.model for s in self.shadows]
        return list(dict.fromkeys(versions))

    def assignment_key(self) -> tuple[tuple[str, float], ...]:
        """What decides which member is in which cell: a change must keep it."""
        return tuple((c.name, c.share) for c in self.cells)


def cell_of(cells: Sequence[Cell], u: float) -> Cell:
    """The cell whose slice of [0, 1) holds u (the last absorbs rounding)."""
    edge = 0.0
    for cell in cells:
        edge += cell.share
        if u < edge:
            return cell
    return cells[-1]
