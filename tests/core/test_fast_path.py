"""The ranker's fast path against a straightforward reference, on random pages.

The reference below walks the page title by title with the 1-D policies of
`keyart.core.policies`, exactly as the design says: scores, diversity against the
images already chosen, the policy's distribution, the cold-start floor, a draw with
the stable uniform. The ranker must give the same images, the same propensities
(to the last bit), the same explored flags and the same logged features, for every
policy, with diversity on and off and with the new-image floor.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest
from tiny import NOW, make_context, make_member

from keyart.core import policies
from keyart.core.featurize import build_matrix
from keyart.core.ranker import PolicyConfig, Ranker, _similarity
from keyart.core.stable import stable_uniform, time_window
from keyart.domain import TitleRequest

POLICIES = ("epsilon_greedy", "softmax", "thompson", "greedy", "uniform")


def reference(ranker: Ranker, member, ctx, page: list[TitleRequest], now) -> list[tuple[str, float, bool]]:
    """(image, propensity, explored) per title, the plain way."""
    cfg, index, model = ranker.config, ranker.index, ranker.model
    assert model is not None
    policy = cfg.policy_for(member.member_id)
    window = time_window(now, cfg.window_hours)
    cands = [list(t.candidate_image_ids) for t in page]
    rows = np.array([index.image_row[i] for c in cands for i in c])
    of = np.repeat(np.arange(len(page)), [len(c) for c in cands])
    x = build_matrix(index, member, ctx, [t.title_id for t in page], rows, of)
    flat = [i for c in cands for i in c]
    scores_all = model.predict(x, flat)
    ens_all = model.predict_ensemble(x, flat) if policy == "thompson" and model.ensemble else None
    out, chosen = [], []
    lo = 0
    for t, ids in zip(page, cands):
        hi = lo + len(ids)
        keep: np.ndarray | float = 1.0
        if cfg.diversity_strength > 0 and chosen:
            sim = np.array([max(_similarity(index.catalog.images[i], c) for c in chosen) for i in ids])
            keep = np.clip(1.0 - cfg.diversity_strength * sim, 0.0, 1.0)
        s = scores_all[lo:hi] * keep
        if policy == "uniform":
            p = policies.uniform(len(ids))
        elif policy == "softmax":
            p = policies.softmax(s, cfg.temperature)
        elif policy == "thompson" and ens_all is not None:
            p = policies.thompson(ens_all[:, lo:hi] * keep, cfg.epsilon, s)
        elif policy == "greedy":
            p = policies.greedy(s)
        else:
            p = policies.epsilon_greedy(s, cfg.epsilon)
        if ranker.exposure is not None and cfg.new_image_min_share > 0:
            new = np.array([ranker.exposure.get(i, 0) < cfg.new_image_impressions for i in ids])
            if new.any() and not new.all():
                p = (1 - cfg.new_image_min_share) * p + cfg.new_image_min_share * new / new.sum()
        i = policies.draw(p, stable_uniform(member.member_id, t.title_id, window, cfg.salt))
        chosen.append(index.catalog.images[ids[i]])
        out.append((ids[i], float(p[i]), i != int(np.argmax(s))))
        lo = hi
    return out


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("diversity", [0.0, 0.6])
def test_fast_path_equals_the_reference_on_random_pages(tiny_index, tiny_model, policy, diversity) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{policy}-{diversity}".encode()))  # fixed seeds
    catalog = tiny_index.catalog
    titles = sorted(catalog.titles)
    mismatches = 0
    for k in range(150):
        page = []
        for t in rng.permutation(titles)[: int(rng.integers(1, len(titles) + 1))]:
            pool = list(catalog.pool(str(t)))
            size = int(rng.integers(1, len(pool) + 1))  # unequal candidate counts on one page
            page.append(TitleRequest(str(t), tuple(rng.permutation(pool)[:size].tolist())))
        counts = {i: int(rng.integers(0, 2000)) for i in catalog.images}  # some images still new
        config = PolicyConfig(name=policy, epsilon=float(rng.uniform(0.01, 0.3)), temperature=0.05,
                              uniform_explore_share=0.0, diversity_strength=diversity,
                              new_image_min_share=float(rng.choice([0.0, 0.1, 0.3])), new_image_impressions=1000,
                              salt=f"salt-{k}")
        ranker = Ranker(tiny_index, tiny_model, config, exposure=counts)
        member = replace(make_member(f"m{k}", favourite=str(rng.choice(["comedy", "romance", "action"]))))
        ctx = make_context(device=str(rng.choice(["TV", "MOBILE", "WEB"])))
        _, sels = ranker.rank(member, ctx, page, NOW)
        want = reference(ranker, member, ctx, page, NOW)
        got = [(s.image_id, s.propensity, s.explored) for s in sels]
        mismatches += got != want
        assert got == want, (k, got, want)
        for s in sels:  # the logged features are the chosen candidate's row
            row = build_matrix(tiny_index, member, ctx, [s.title_id], np.array([tiny_index.image_row[s.image_id]]),
                               np.zeros(1, int))[0]
            assert s.features == row.astype("<f4").tobytes()  # bit for bit
    assert mismatches == 0


def test_bulk_decision_ids_are_time_ordered_uuid7() -> None:
    import time
    import uuid

    from keyart.core.ranker import new_decision_id, new_decision_ids

    before = time.time_ns() // 1_000_000
    ids = new_decision_ids(500) + [new_decision_id() for _ in range(50)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 550
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(before <= int(i[:12], 16) <= after for i in ids)  # 48 bits of Unix milliseconds
    later = new_decision_ids(1)[0]
    time.sleep(0.002)
    assert new_decision_ids(1)[0][:12] > later[:12]  # time order across pages
    # The 74 random bits are random: the tail's hex digits pass a chi-square test
    # for uniformity. The OS supplies the randomness, so no seed: the bound is
    # the 1e-9 tail of chi-square with 15 degrees of freedom, which a uniform
    # source crosses once in a billion runs and a counter or a constant tail
    # crosses every time.
    from scipy.stats import chi2

    tails = "".join(i[20:] for i in new_decision_ids(5000))
    counts = [tails.count(c) for c in "0123456789abcdef"]
    expected = len(tails) / 16
    statistic = sum((c - expected) ** 2 / expected for c in counts)
    assert statistic < chi2.isf(1e-9, df=15)
