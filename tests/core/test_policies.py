"""Logged propensities must equal the empirical choice frequencies, for every policy.

Each draw changes only the stability salt, so the stable uniform behind the choice
varies while member, page and scores stay fixed; a chi-square goodness-of-fit
test compares how often each image was chosen with the logged propensity.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import chisquare
from tiny import NOW, make_context, make_member

from keyart.core import policies
from keyart.core.ranker import PolicyConfig, Ranker
from keyart.domain import TitleRequest

DRAWS = 3000
P_MIN = 1e-3  # a correct formula fails this with probability 0.001


def _simulate(ranker: Ranker, titles: list[TitleRequest], draws: int = DRAWS):
    """Per title position: {history of earlier choices: (Counter of choices, propensities)}."""
    member, ctx = make_member(), make_context()
    seen: dict[int, dict[tuple, tuple[Counter, dict[str, float]]]] = defaultdict(dict)
    base = ranker.config
    for k in range(draws):
        ranker.config = replace(base, salt=f"draw-{k}")
        _, selections = ranker.rank(member, ctx, titles, NOW)
        history: tuple = ()
        for pos, s in enumerate(selections):
            counts, props = seen[pos].setdefault(history, (Counter(), {}))
            counts[s.image_id] += 1
            if s.image_id in props:
                assert props[s.image_id] == pytest.approx(s.propensity, abs=1e-12), "propensity not stable"
            props[s.image_id] = s.propensity
            history += (s.image_id,)
    ranker.config = base
    return seen


def _assert_matches(counts: Counter, props: dict[str, float]) -> None:
    ids = sorted(props)
    observed = np.array([counts[i] for i in ids], dtype=float)
    expected = np.array([props[i] for i in ids]) * observed.sum()
    total_p = sum(props.values())
    # Images never drawn have no logged propensity: their mass must be negligible.
    assert total_p == pytest.approx(1.0, abs=0.02), f"unseen images carry {1 - total_p:.3f} mass"
    expected *= observed.sum() / expected.sum()
    if len(ids) > 1:
        assert chisquare(observed, expected).pvalue > P_MIN, (observed, expected)


POLICIES = [
    PolicyConfig(name="epsilon_greedy", epsilon=0.3, uniform_explore_share=0.0),
    PolicyConfig(name="softmax", temperature=0.05, uniform_explore_share=0.0),
    PolicyConfig(name="thompson", epsilon=0.1, uniform_explore_share=0.0),
    PolicyConfig(name="uniform", uniform_explore_share=0.0),
]


@pytest.mark.parametrize("config", POLICIES, ids=lambda c: c.name)
def test_propensity_matches_choice_frequency(tiny_index, tiny_model, config):
    ranker = Ranker(tiny_index, tiny_model, config)
    seen = _simulate(ranker, [TitleRequest("t0")])
    (counts, props), = seen[0].values()
    _assert_matches(counts, props)


@pytest.mark.parametrize("config", POLICIES[:3], ids=lambda c: c.name)
def test_sequential_diversity_propensity_is_conditional_on_earlier_choices(tiny_index, tiny_model, config):
    ranker = Ranker(tiny_index, tiny_model, replace(config, diversity_strength=1.5))
    seen = _simulate(ranker, [TitleRequest("t0"), TitleRequest("t2")], draws=4000)
    tested = 0
    for counts, props in seen[1].values():
        if sum(counts.values()) >= 300:
            _assert_matches(counts, props)
            tested += 1
    assert tested >= 1
    # Diversity really changes the second choice's distribution across histories.
    dists = [tuple(sorted(p.items())) for _, p in seen[1].values()]
    assert len(set(dists)) > 1


def test_chi_square_has_power_against_a_wrong_formula(tiny_index, tiny_model):
    """Logging softmax propensities for an epsilon-greedy choice must be caught."""
    ranker = Ranker(tiny_index, tiny_model, POLICIES[0])
    (counts, props), = _simulate(ranker, [TitleRequest("t0")])[0].values()
    wrong = dict(zip(sorted(props), policies.softmax(np.array([props[i] for i in sorted(props)]), 1.0)))
    ids = sorted(props)
    observed = np.array([counts[i] for i in ids], float)
    expected = np.array([wrong[i] for i in ids]) * observed.sum()
    assert chisquare(observed, expected).pvalue < P_MIN


def test_policy_distributions_are_valid():
    scores = np.array([0.1, 0.3, 0.2])
    for p in (
        policies.epsilon_greedy(scores, 0.1),
        policies.softmax(scores, 0.05),
        policies.thompson(np.array([[0.1, 0.3, 0.2], [0.4, 0.1, 0.0]]), 0.1),
        policies.uniform(3),
    ):
        assert p.sum() == pytest.approx(1.0)
        assert (p > 0).all()
    assert policies.epsilon_greedy(scores, 0.1)[1] == pytest.approx(0.9 + 0.1 / 3)
    assert policies.thompson(np.array([[0.1, 0.3, 0.2], [0.4, 0.1, 0.0]]), 0.0).tolist() == [0.5, 0.5, 0.0]
    # With the full model's scores: its best keeps 1 - epsilon, the posterior's picks half of epsilon.
    p = policies.thompson(np.array([[0.1, 0.3, 0.2], [0.4, 0.1, 0.0]]), 0.1, scores)
    assert p.tolist() == pytest.approx([0.1 * (0.25 + 0.5 / 3), 0.9 + 0.1 * (0.25 + 0.5 / 3), 0.1 * 0.5 / 3])


def test_draw_inverse_cdf_edges():
    p = np.array([0.2, 0.5, 0.3])
    assert policies.draw(p, 0.0) == 0
    assert policies.draw(p, 0.1999) == 0
    assert policies.draw(p, 0.2) == 1
    assert policies.draw(p, 0.9999999) == 2


def test_cold_start_floor_keeps_propensities_exact(tiny_index, tiny_model):
    counts = {i: 10_000 for i in tiny_index.catalog.images} | {"t0-i2": 0, "t0-i4": 3}
    config = PolicyConfig(name="softmax", temperature=0.05, uniform_explore_share=0.0,
                          new_image_min_share=0.3, new_image_impressions=10)
    ranker = Ranker(tiny_index, tiny_model, config, exposure=counts)
    (counts_seen, props), = _simulate(ranker, [TitleRequest("t0")])[0].values()
    _assert_matches(counts_seen, props)
    assert props["t0-i2"] >= 0.15 and props["t0-i4"] >= 0.15
