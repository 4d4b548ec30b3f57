"""Cell assignment: stable per (experiment, member), in the configured shares."""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

from keyart.core.experiment import Cell, Experiment, Shadow, cell_of

EXP = Experiment("exp-a", control="control",
                 cells=(Cell("control", 0.8), Cell("candidate", 0.1), Cell("uniform", 0.1, policy="uniform")))
MEMBERS = [f"member-{k}" for k in range(20_000)]


def _counts(exp: Experiment) -> np.ndarray:
    names = [c.name for c in exp.cells]
    got = [exp.cell_for(m).name for m in MEMBERS]
    return np.array([got.count(n) for n in names])


def test_shares_match_the_configuration() -> None:
    counts = _counts(EXP)
    shares = np.array([c.share for c in EXP.cells])
    assert chisquare(counts, shares * len(MEMBERS)).pvalue > 0.01
    # A wrong split (the shares of another experiment) is rejected by the same test.
    assert chisquare(counts, np.array([0.7, 0.2, 0.1]) * len(MEMBERS)).pvalue < 1e-6


def test_assignment_is_stable_and_changes_only_with_the_experiment() -> None:
    again = Experiment("exp-a", cells=EXP.cells, control="control", revision=7)
    assert [EXP.cell_for(m) for m in MEMBERS[:500]] == [again.cell_for(m) for m in MEMBERS[:500]]
    other = Experiment("exp-b", cells=EXP.cells, control="control")
    moved = sum(EXP.cell_for(m).name != other.cell_for(m).name for m in MEMBERS[:2000])
    assert moved > 200  # another id: an independent split, not the same members again


def test_cell_of_edges() -> None:
    cells = (Cell("a", 0.5), Cell("b", 0.5))
    assert cell_of(cells, 0.0).name == "a" and cell_of(cells, 0.4999).name == "a"
    assert cell_of(cells, 0.5).name == "b" and cell_of(cells, 0.999999).name == "b"


def test_model_versions() -> None:
    exp = Experiment("e", cells=(Cell("c", 0.5), Cell("d", 0.5, model="m-2")), control="c",
                     shadows=(Shadow("s", "m-3"),))
    assert exp.model_versions() == ["m-2", "m-3"]


def test_a_sampled_shadow_scores_its_share_of_pages() -> None:
    shadow = Shadow("s", "m-3", share=0.25)
    scored = sum(shadow.scores(f"request-{k}") for k in range(20_000))
    assert chisquare([scored, 20_000 - scored], [5_000, 15_000]).pvalue > 0.01
    assert shadow.scores("request-7") == shadow.scores("request-7")
    assert all(Shadow("t", "m-3").scores(f"r{k}") for k in range(100))
