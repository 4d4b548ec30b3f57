"""Fixtures of the training tests: the shared small platform (world + Feast + model),
its catalog index, a fast point-in-time member lookup and simulated logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keyart.adapters.catalog.parquet import load_catalog
from keyart.core.featurize import CatalogIndex
from keyart.core.model import current_version, load_model
from keyart.core.ranker import PolicyConfig, Ranker
from keyart.jobs.world.world_model import load_world
from keyart_training.data.lookup import parquet_lookup
from keyart_training.simulate import simulate_pages


@pytest.fixture(scope="session")
def world(platform_settings):
    return load_world(platform_settings.world_dir)


@pytest.fixture(scope="session")
def index(platform_settings) -> CatalogIndex:
    return CatalogIndex.build(load_catalog(platform_settings.world_dir))


@pytest.fixture(scope="session")
def lookup(platform_settings):
    return parquet_lookup(platform_settings.world_dir)


@pytest.fixture(scope="session")
def served_model(platform_settings):
    return load_model(platform_settings.models_dir / current_version(platform_settings.models_dir))


@pytest.fixture(scope="session")
def uniform_log(world, index, lookup) -> pd.DataFrame:
    """Uniform exploration: 800 pages."""
    return simulate_pages(world, index, lookup, pages=800, seed=21)


@pytest.fixture(scope="session")
def mixed_log(world, index, lookup, served_model) -> pd.DataFrame:
    """Epsilon-greedy on the served model (epsilon 0.3) with 30% of members uniform."""
    ranker = Ranker(index, served_model, PolicyConfig(name="epsilon_greedy", epsilon=0.3,
                                                      uniform_explore_share=0.3))
    return simulate_pages(world, index, lookup, pages=1500, seed=22, ranker=ranker)


@pytest.fixture(scope="session")
def later_log(world, index, lookup, served_model) -> pd.DataFrame:
    """Like mixed_log, but decided in the 14 days after the served model's training window
    (which ends at the world's now): the model can be scored on it out of sample."""
    from datetime import timedelta

    ranker = Ranker(index, served_model, PolicyConfig(name="epsilon_greedy", epsilon=0.3,
                                                      uniform_explore_share=0.3))
    return simulate_pages(world, index, lookup, pages=1500, seed=23, ranker=ranker,
                          end=world.now + timedelta(days=14))


def quality_rate(df: pd.DataFrame, minutes: float) -> float:
    return float(np.mean(df["max_minutes"] >= minutes))


def make_known_bandit(n_per_cell: int = 75) -> pd.DataFrame:
    """Two contexts x three actions; reward is deterministic given (context, action).

    Logging: context "a" logs actions with (0.5, 0.25, 0.25), context "b" uniformly;
    every (context, action) cell appears exactly in proportion to its propensity.
    Reward 1 for (a, x) and (b, z), else 0. Target: x in a, z in b (value 1.0).
    """
    rows = []
    plan = {"a": {"x": 0.5, "y": 0.25, "z": 0.25}, "b": {"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}}
    best = {"a": "x", "b": "z"}
    for ctx, probs in plan.items():
        for action, p in probs.items():
            for _ in range(int(round(n_per_cell * 4 * p))):
                rows.append({
                    "action": action, "propensity": p, "reward": float(action == best[ctx]),
                    "actions": ["x", "y", "z"],
                    "target_probs": [float(a == best[ctx]) for a in "xyz"],
                    "reward_hat": [float(a == best[ctx]) for a in "xyz"],
                    "context": ctx, "policy": "uniform" if ctx == "b" else "epsilon_greedy",
                })
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def known_bandit():
    """Factory of the hand-built bandit dataset with a known answer."""
    return make_known_bandit
