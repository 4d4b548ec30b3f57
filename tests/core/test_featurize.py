"""Serving and offline evaluation build candidate rows through the same code."""

from __future__ import annotations

import numpy as np
from tiny import make_context, make_member

from keyart.core.featurize import build_matrix
from keyart_training.ope.evaluate import candidate_matrix


def test_one_row_through_serving_and_evaluation_gives_equal_matrices(tiny_index) -> None:
    catalog = tiny_index.catalog
    titles = sorted(catalog.titles)[:3]
    pools = [list(catalog.pool(t)) for t in titles]
    rows = np.array([tiny_index.image_row[i] for p in pools for i in p], dtype=np.int64)
    title_of_row = np.repeat(np.arange(len(titles)), [len(p) for p in pools])
    for device in ("TV", "MOBILE"):
        member = make_member("m1")
        served = build_matrix(tiny_index, member, make_context(device=device), titles, rows, title_of_row)
        # The log keeps the served row of one chosen image per title, plus the member's actors.
        chosen = np.concatenate([[0], np.cumsum([len(p) for p in pools])[:-1]])
        logged = served[chosen]
        rebuilt = candidate_matrix(logged, tiny_index, rows, title_of_row, [dict(member.actor_affinity)] * len(titles))
        assert rebuilt.shape == (len(rows), len(tiny_index.space.names))
        np.testing.assert_array_equal(rebuilt, served)
        assert served[:, tiny_index.space.index["cast_affinity"]].any()  # the cast crosses were exercised


def test_vectorized_cast_crosses_equal_the_per_row_loop(tiny_index) -> None:
    """One member's map for the whole page (vectorized) and a map per row (the loop) agree exactly."""
    from keyart.core.featurize import candidate_rows, context_columns

    catalog = tiny_index.catalog
    titles = sorted(catalog.titles)
    pools = [list(catalog.pool(t)) for t in titles]
    rows = np.array([tiny_index.image_row[i] for p in pools for i in p], dtype=np.int64)
    segment = np.repeat(np.arange(len(titles)), [len(p) for p in pools])
    member = make_member("m1")
    actors = {"a0": 0.3, "a1": 0.0, "a2": 0.7, "not-in-catalog": 0.9}
    ctx = context_columns(tiny_index, member, make_context(), titles)
    shared = candidate_rows(tiny_index, ctx, segment, rows, [actors] * len(titles))
    per_row = candidate_rows(tiny_index, ctx, segment, rows, [dict(actors) for _ in titles])
    np.testing.assert_array_equal(shared, per_row)
    col = tiny_index.space.index
    assert shared[:, col["cast_known"]].max() >= 1 and shared[:, col["max_cast_affinity"]].max() == np.float32(0.7)
