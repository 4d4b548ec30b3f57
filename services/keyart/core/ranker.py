"""The decision core: one image per title of a page, with its exact propensity.

Plain Python and numpy; the gRPC servicer and the Ray Serve deployment wrap it.
Steps: resolve each title's candidates, score every candidate of the page in one
LightGBM call, then walk the page in order, penalising images similar to those
already chosen, and draw from the policy's distribution with a stable uniform.
Before a first model exists, the draw is uniform over each title's candidates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np

from keyart.core import policies
from keyart.core.featurize import CatalogIndex, build_matrix, feature_rows
from keyart.core.log_limit import LimitedLog
from keyart.core.model import QualityPlayModel
from keyart.core.stable import stable_uniform, stable_uniforms, time_window
from keyart.domain import (
    ImageInfo,
    MemberFeatures,
    RequestContext,
    Selection,
    ShadowChoice,
    TitleRequest,
    build_selection,
)

limited = LimitedLog(logging.getLogger(__name__))

FALLBACK_UNKNOWN_TITLE = "unknown_title"
FALLBACK_UNKNOWN_IMAGE = "unknown_image"
FALLBACK_NO_CANDIDATES = "no_active_images"
FALLBACK_MODEL_ERROR = "model_error"
FALLBACK_FEATURES_UNAVAILABLE = "features_unavailable"
FALLBACK_DEADLINE = "deadline_exceeded"
# The policy of every member while no model is loaded (day one of a new catalog).
POLICY_NO_MODEL = "uniform"
# Resolved candidate lists kept per catalog snapshot (`CatalogIndex.resolved`): a bound
# for clients that send ever new lists; the cache starts over when it is reached.
RESOLVED_CACHE_MAX = 50_000


@dataclass(frozen=True)
class PolicyConfig:
    """How the ranker explores, stays stable and diversifies."""

    name: str = "epsilon_greedy"  # epsilon_greedy | softmax | thompson | greedy | uniform
    epsilon: float = 0.05
    temperature: float = 0.02
    uniform_explore_share: float = 0.02
    window_hours: float = 24.0
    salt: str = "keyart-v1"
    diversity_strength: float = 0.0  # 0 = off; 1 = a duplicate look scores zero
    # Cold start: images with fewer impressions than this share at least this much
    # of their title's choice probability, so new artwork gets seen and learned.
    new_image_min_share: float = 0.1
    new_image_impressions: int = 1000

    def policy_for(self, member_id: str) -> str:
        """The policy a member gets: a hashed share of members is explored uniformly."""
        if stable_uniform(member_id, "uniform-explore", self.salt) < self.uniform_explore_share:
            return "uniform"
        return self.name


def new_decision_id() -> str:
    return new_decision_ids(1)[0]


def new_decision_ids(n: int) -> list[str]:
    """n version-7 UUIDs (RFC 9562) as hex, from one urandom read (a page needs 40).

    48 bits of Unix milliseconds, then 74 random bits: unique like version 4, but in time
    order, so every log store appends to its decision-id index instead of inserting at
    random places (SQLite: 2.6x less CPU per page written, measured on 40-row pages).
    """
    millis = time.time_ns() // 1_000_000
    raw = bytearray(os.urandom(16 * n))
    stamp = millis.to_bytes(6, "big")
    for k in range(n):
        at = 16 * k
        raw[at:at + 6] = stamp
        raw[at + 6] = (raw[at + 6] & 0x0F) | 0x70  # version 7
        raw[at + 8] = (raw[at + 8] & 0x3F) | 0x80  # RFC variant
    text = raw.hex()
    return [text[32 * k : 32 * (k + 1)] for k in range(n)]


def _similarity(a: ImageInfo, b: ImageInfo) -> float:
    """How alike two images look on a page, in [0, 1]."""
    return (
        0.4 * (a.lineage_id == b.lineage_id)
        + 0.3 * (a.style == b.style)
        + 0.3 * (a.palette == b.palette)
    )


def _page_layout(candidates: list[tuple[str, ...]],
                 row_blocks: list[np.ndarray]) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """A page's scored titles laid out as rows: candidates per title, the ids in row order,
    their rows in the index's image matrix, and each row's title (its index in `candidates`)."""
    sizes = np.array([len(c) for c in candidates])
    rows = np.concatenate(row_blocks)
    return sizes, list(chain.from_iterable(candidates)), rows, np.repeat(np.arange(len(candidates)), sizes)


class Resolved(NamedTuple):
    """A title's candidates as a page resolves them: ids, or the reason it falls back."""

    ids: tuple[str, ...]  # empty with a reason
    reason: str  # "" when the title has candidates
    rows: np.ndarray  # the ids' rows in the index's image matrix (read-only)


@dataclass(frozen=True)
class ScoredPage:
    """The candidates a ranker scored for one page (titles with candidates, in page order)."""

    title_ids: list[str]
    candidates: list[tuple[str, ...]]
    x: np.ndarray  # their feature rows, candidates of each title in turn
    counts: np.ndarray | None  # their impressions so far (the new-image floor), None if off
    flat_ids: list[str]  # the candidates in row order
    rows: np.ndarray  # their rows in the index's image matrix


class Ranker:
    """Chooses artwork for pages using one catalog snapshot and one model."""

    def __init__(
        self,
        index: CatalogIndex,
        model: QualityPlayModel | None,
        config: PolicyConfig,
        new_id: Callable[[], str] = new_decision_id,
        new_ids: Callable[[int], list[str]] | None = None,
        exposure: Mapping[str, int] | None = None,
    ) -> None:
        if model is not None and model.space is not None and model.space is not index.space \
                and model.space != index.space:
            raise ValueError(f"model {model.version} learned another feature space than the catalog index's: "
                             "build the index with CatalogIndex.build(catalog, model.space)")
        self.index = index
        self.model = model
        # The model's per-image offsets over the index's image rows, gathered per page by row.
        self.row_offsets = model.row_offsets_over(index, lambda: index.image_ids) if model is not None else None
        self.config = config
        self.new_id = new_id
        # Bulk ids for a page (one urandom call); by default from new_id when that was given.
        self.new_ids = new_ids or (new_decision_ids if new_id is new_decision_id
                                   else (lambda n: [new_id() for _ in range(n)]))
        self.exposure = exposure  # image_id -> impressions so far (absent: 0); None disables cold-start boost
        # The last page's scored candidates: a shadow ranker on the same index scores them
        # without resolving and featurizing the page again.
        self.last_scored: ScoredPage | None = None

    @property
    def model_version(self) -> str:
        return self.model.version if self.model else ""

    def fallback(self, title_id: str, position: int, reason: str, device: str = "") -> Selection:
        """The title's default image, chosen with certainty."""
        title = self.index.catalog.titles.get(title_id)
        image = self.index.catalog.images.get(title.default_image_id) if title else None
        return Selection(
            title_id=title_id,
            image_id=image.image_id if image else "",
            lineage_id=image.lineage_id if image else "",
            propensity=1.0,
            score=0.0,
            explored=False,
            decision_id=self.new_id(),
            fallback_reason=reason,
            position=position,
            crop=self.index.catalog.crop_for_device(image.image_id, device) if image else None,
        )

    def fallback_page(self, titles: list[TitleRequest], reason: str, device: str = "") -> list[Selection]:
        return [self.fallback(t.title_id, i, reason, device) for i, t in enumerate(titles)]

    def _resolve(self, request: TitleRequest) -> Resolved:
        """The title's candidates, from this catalog snapshot's cache when the same title
        and candidate list were resolved before (the snapshot never changes)."""
        ids = request.candidate_image_ids
        key = (request.title_id, ids if type(ids) is tuple else tuple(ids))
        cache = self.index.resolved
        hit: Resolved | None = cache.get(key)
        if hit is None:
            found, reason = self._check_candidates(request)
            rows = np.fromiter(map(self.index.image_row.__getitem__, found), dtype=np.int64, count=len(found))
            rows.flags.writeable = False  # shared by every page that shows this title
            hit = Resolved(tuple(found), reason, rows)
            if len(cache) >= RESOLVED_CACHE_MAX:
                cache.clear()
            cache[key] = hit
        return hit

    def _check_candidates(self, request: TitleRequest) -> tuple[list[str], str]:
        """Candidate image ids for a title, or a fallback reason (uncached)."""
        catalog = self.index.catalog
        title = catalog.titles.get(request.title_id)
        if title is None:
            return [], FALLBACK_UNKNOWN_TITLE
        if request.candidate_image_ids:
            ids = request.candidate_image_ids
            own = self.index.title_images.get(title.title_id)
            if own is None or not own.issuperset(ids):  # name the first image that is not the title's
                for image_id in ids:
                    image = catalog.images.get(image_id)
                    if image is None or image.title_id != title.title_id:
                        return [], f"{FALLBACK_UNKNOWN_IMAGE}:{image_id}"
            return list(dict.fromkeys(ids)), ""
        pool = list(catalog.pool(title.title_id))
        return (pool, "") if pool else ([], FALLBACK_NO_CANDIDATES)

    def rank(
        self,
        member: MemberFeatures,
        context: RequestContext,
        titles: list[TitleRequest],
        decided_at: datetime,
    ) -> tuple[str, list[Selection]]:
        """Choose one image per title, in page order.

        With no model loaded every member gets the "uniform" policy: each title's image is
        drawn uniformly over its candidates (propensity 1/k) and its features are logged,
        so the first model has data to learn from. Default artwork is only for titles that
        cannot be served (unknown title or image, no active image).

        Returns:
            (policy name used for this member, selections in page order)
        """
        selections: list[Selection | None] = [None] * len(titles)
        scored_titles: list[int] = []  # positions of titles that have candidates
        candidates: list[tuple[str, ...]] = []
        row_blocks: list[np.ndarray] = []
        resolve = self._resolve
        for pos, request in enumerate(titles):
            ids, reason, title_rows = resolve(request)
            if reason:
                selections[pos] = self.fallback(request.title_id, pos, reason, context.device)
            else:
                scored_titles.append(pos)
                candidates.append(ids)
                row_blocks.append(title_rows)
        if self.model is None:  # day one: no model yet, so explore (and log features to learn from)
            self._explore_uniformly(member, context, titles, decided_at, scored_titles, candidates, selections)
            return POLICY_NO_MODEL, [s for s in selections if s is not None]
        policy = self.config.policy_for(member.member_id)
        if not scored_titles:
            return policy, [s for s in selections if s is not None]

        sizes, flat_ids, rows, title_of_row = _page_layout(candidates, row_blocks)
        title_ids = [titles[p].title_id for p in scored_titles]
        x = build_matrix(self.index, member, context, title_ids, rows, title_of_row)
        counts = self._exposure_counts(flat_ids) if self.config.diversity_strength <= 0.0 else None
        self.last_scored = ScoredPage(title_ids, candidates, x, counts, flat_ids, rows)
        try:
            scores = self.model.predict(x, flat_ids, rows=rows, table=self.row_offsets)
            ensemble = (
                self.model.predict_ensemble(x, flat_ids, rows=rows, table=self.row_offsets)
                if policy == "thompson" and self.model.has_ensemble
                else None
            )
        except Exception as exc:  # a broken model must not fail the page
            limited.error("model_error", "model %s failed to score a page (%s: %s): default artwork served",
                          self.model_version, type(exc).__name__, str(exc)[:200])
            for pos in scored_titles:
                selections[pos] = self.fallback(
                    titles[pos].title_id, pos, FALLBACK_MODEL_ERROR, context.device
                )
            return policy, [s for s in selections if s is not None]

        window = time_window(decided_at, self.config.window_hours)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        uniforms = stable_uniforms(member.member_id, [titles[p].title_id for p in scored_titles], window,
                                   self.config.salt)
        if self.config.diversity_strength <= 0.0:  # titles are independent: choose them all at once
            picks, props, explored = self._choose_all(policy, scores, ensemble, offsets, counts, uniforms)
        else:  # each title's choice depends on the images already on the page
            picks, props, explored = self._choose_in_order(policy, scores, ensemble, offsets, candidates, uniforms)
        ids_new = self.new_ids(len(scored_titles))
        images = self.index.catalog.images
        chosen = (offsets[:-1] + np.asarray(picks, dtype=np.int64)).tolist()
        chosen_x = feature_rows(x[chosen])  # one encode for the page's logged feature rows
        chosen_scores = scores[chosen].tolist()
        for k, pos in enumerate(scored_titles):
            image = images[flat_ids[chosen[k]]]
            selections[pos] = build_selection(
                title_id=titles[pos].title_id,
                image_id=image.image_id,
                lineage_id=image.lineage_id,
                propensity=props[k],
                score=chosen_scores[k],
                explored=explored[k],
                decision_id=ids_new[k],
                position=pos,
                features=chosen_x[k],
                crop=self.index.catalog.crop_for_device(image.image_id, context.device),
            )
        return policy, [s for s in selections if s is not None]

    def _choose_in_order(
        self,
        policy: str,
        scores: np.ndarray,
        ensemble: np.ndarray | None,
        offsets: np.ndarray,
        candidates: list[tuple[str, ...]],
        uniforms: list[float],
    ) -> tuple[list[int], list[float], list[bool]]:
        """Title by title in page order, penalising images like those already chosen.

        Returns, per title, the chosen candidate's index, its propensity and whether it
        was explored (as `_choose_all`, which this equals with diversity off).
        """
        picks: list[int] = []
        props: list[float] = []
        explored: list[bool] = []
        chosen_images: list[ImageInfo] = []
        for k, ids in enumerate(candidates):
            lo, hi = offsets[k], offsets[k + 1]
            keep = self._diversity_factor(ids, chosen_images)  # 1 = unlike anything on the page
            s = scores[lo:hi] * keep
            p = self._distribution(policy, s, None if ensemble is None else ensemble[:, lo:hi] * keep)
            p = self._with_new_image_floor(p, ids)
            i = policies.draw(p, uniforms[k])
            chosen_images.append(self.index.catalog.images[ids[i]])
            picks.append(i)
            props.append(float(p[i]))
            explored.append(i != int(np.argmax(s)))
        return picks, props, explored

    def _explore_uniformly(
        self,
        member: MemberFeatures,
        context: RequestContext,
        titles: list[TitleRequest],
        decided_at: datetime,
        scored_titles: list[int],
        candidates: list[tuple[str, ...]],
        selections: list[Selection | None],
    ) -> None:
        """Without a model: each title's image uniformly over its k candidates, propensity 1/k.

        The draw uses the same stable uniform as the model's policies (one image per member
        and title within a window), every choice counts as explored, the score is 0 (there
        is no prediction), and the chosen image's feature row is built so it is logged.
        Neither the new-image floor nor diversity applies: uniform already treats every
        candidate alike, and either would make the propensity differ from 1/k.
        """
        if not scored_titles:
            return
        window = time_window(decided_at, self.config.window_hours)
        chosen: list[str] = []
        for pos, ids in zip(scored_titles, candidates):
            u = stable_uniform(member.member_id, titles[pos].title_id, window, self.config.salt)
            chosen.append(ids[policies.draw(policies.uniform(len(ids)), u)])
        title_ids = [titles[p].title_id for p in scored_titles]
        rows = np.array([self.index.image_row[i] for i in chosen], dtype=np.int64)
        x = feature_rows(build_matrix(self.index, member, context, title_ids, rows, np.arange(len(chosen))))
        for k, (pos, ids, image_id) in enumerate(zip(scored_titles, candidates, chosen)):
            image = self.index.catalog.images[image_id]
            selections[pos] = build_selection(
                title_id=titles[pos].title_id,
                image_id=image.image_id,
                lineage_id=image.lineage_id,
                propensity=1.0 / len(ids),
                score=0.0,
                explored=True,
                decision_id=self.new_id(),
                position=pos,
                features=x[k],
                crop=self.index.catalog.crop_for_device(image.image_id, context.device),
            )

    def _choose_all(
        self,
        policy: str,
        scores: np.ndarray,
        ensemble: np.ndarray | None,
        offsets: np.ndarray,
        counts: np.ndarray | None,
        uniforms: list[float],
    ) -> tuple[list[int], list[float], list[bool]]:
        """Every title's draw at once (no diversity: titles do not depend on each other).

        Titles are grouped by candidate count and each group is one 2-D array, so every
        row goes through the same numpy reductions as the per-title loop (`_distribution`,
        `_with_new_image_floor`, `policies.draw`): same floats, same choices. Returns,
        per title, the chosen candidate's index, its propensity and whether it was explored.
        """
        n_titles = len(offsets) - 1
        picks = [0] * n_titles
        props = [0.0] * n_titles
        explored = [False] * n_titles
        u_all = np.asarray(uniforms, dtype=np.float64)
        for group, s, p in self._group_distributions(policy, scores, ensemble, offsets, counts):
            chosen = policies.draw_rows(p, u_all[group])
            at = np.arange(len(group))
            # whole columns to Python at once: a numpy scalar read per title cost ~0.5 us each
            for g, c, q, e in zip(group.tolist(), chosen.tolist(), p[at, chosen].tolist(),
                                  (chosen != np.argmax(s, axis=1)).tolist()):
                picks[g], props[g], explored[g] = c, q, e
        return picks, props, explored

    def _group_distributions(
        self,
        policy: str,
        scores: np.ndarray,
        ensemble: np.ndarray | None,
        offsets: np.ndarray,
        counts: np.ndarray | None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(titles, their scores, their choice distributions) per group of equal candidate count;
        `counts` (impressions per flat candidate) applies the new-image floor."""
        sizes = np.diff(offsets)
        for k in ([int(sizes[0])] if sizes.min() == sizes.max() else np.unique(sizes).tolist()):
            group = np.flatnonzero(sizes == k)
            cols = offsets[group][:, None] + np.arange(k)  # flat rows of each title of the group
            s = scores[cols]
            p = policies.distribution_rows(policy, s, None if ensemble is None else ensemble[:, cols],
                                           self.config.epsilon, self.config.temperature)
            if counts is not None:
                p = policies.new_image_floor_rows(p, counts[cols] < self.config.new_image_impressions,
                                                  self.config.new_image_min_share)
            yield group, s, p

    def _exposure_counts(self, flat_ids: list[str]) -> np.ndarray | None:
        """Impressions so far of each candidate, when the new-image floor is on."""
        if self.exposure is None or self.config.new_image_min_share <= 0.0:
            return None
        # .get with a default: a Counter's own lookup calls __missing__ in Python for every
        # image never shown yet (most candidates), twice the time of the whole map.
        return np.fromiter(map(self.exposure.get, flat_ids, repeat(0)), dtype=np.int64, count=len(flat_ids))

    def shadow_choices(
        self,
        name: str,
        member: MemberFeatures,
        context: RequestContext,
        titles: list[TitleRequest],
        served: list[Selection],
        served_by: Ranker | None = None,
    ) -> list[ShadowChoice | None]:
        """What this ranker (a shadow's model and policy) would do for each served selection.

        The same candidates are scored; the distribution is the shadow policy's with the
        new-image floor, title by title (page diversity is not applied: the served page's
        images would be the shadow's context, not its own). None for a fallback selection,
        which has no candidates to compare, or when the shadow has no model. `served_by`, the
        ranker that served the page, lends its feature matrix when it featurized in this
        ranker's index (the same rows, so the same features).
        """
        out: list[ShadowChoice | None] = [None] * len(served)
        if self.model is None:
            return out
        lent = served_by.last_scored if served_by is not None and served_by.index is self.index else None
        scored = [k for k, sel in enumerate(served)
                  if not sel.fallback_reason and sel.features and sel.position < len(titles)]
        if lent is not None and lent.title_ids == [served[k].title_id for k in scored]:
            keep, candidates, x, flat_ids, rows = scored, lent.candidates, lent.x, lent.flat_ids, lent.rows
            sizes = np.array([len(c) for c in candidates])
        else:
            keep, candidates, row_blocks = [], [], []
            for k in scored:
                ids, reason, title_rows = self._resolve(titles[served[k].position])
                if not reason and served[k].image_id in ids:
                    keep.append(k)
                    candidates.append(ids)
                    row_blocks.append(title_rows)
            if not keep:
                return out
            sizes, flat_ids, rows, title_of_row = _page_layout(candidates, row_blocks)
            x = build_matrix(self.index, member, context, [served[k].title_id for k in keep], rows, title_of_row)
        if not keep:
            return out
        policy = self.config.name
        counts = lent.counts if lent is not None and candidates is lent.candidates else self._exposure_counts(flat_ids)
        scores = self.model.predict(x, flat_ids, rows=rows, table=self.row_offsets)
        ensemble = (self.model.predict_ensemble(x, flat_ids, rows=rows, table=self.row_offsets)
                    if policy == "thompson" and self.model.has_ensemble else None)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for group, s, p in self._group_distributions(policy, scores, ensemble, offsets, counts):
            best = np.argmax(s, axis=1)
            expected = np.sum(p * s, axis=1)
            for j, g in enumerate(group.tolist()):
                ids, sel = candidates[g], served[keep[g]]
                at = ids.index(sel.image_id)
                out[keep[g]] = ShadowChoice(
                    name=name, model_version=self.model.version, image_id=ids[int(best[j])],
                    propensity=float(p[j, best[j]]), served_propensity=float(p[j, at]),
                    expected_score=float(expected[j]), served_score=float(s[j, at]))
        return out

    def _diversity_factor(self, ids: Sequence[str], chosen: list[ImageInfo]) -> np.ndarray | float:
        """Multiplier in [0, 1] per candidate, shrinking images like ones already on the page."""
        strength = self.config.diversity_strength
        if strength <= 0.0 or not chosen:
            return 1.0
        images = self.index.catalog.images
        sim = np.array([max(_similarity(images[i], c) for c in chosen) for i in ids])
        return np.clip(1.0 - strength * sim, 0.0, 1.0)

    def _with_new_image_floor(self, p: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """Mix in a uniform share over images still short of impressions (exact propensity)."""
        share = self.config.new_image_min_share
        if self.exposure is None or share <= 0.0:
            return p
        new = np.array([self.exposure.get(i, 0) < self.config.new_image_impressions for i in ids])
        if not new.any() or new.all():
            return p
        return (1.0 - share) * p + share * new / new.sum()

    def _distribution(
        self, policy: str, scores: np.ndarray, ensemble_scores: np.ndarray | None
    ) -> np.ndarray:
        cfg = self.config
        if policy == "uniform":
            return policies.uniform(len(scores))
        if policy == "softmax":
            return policies.softmax(scores, cfg.temperature)
        if policy == "thompson" and ensemble_scores is not None:
            return policies.thompson(ensemble_scores, cfg.epsilon, scores)
        if policy == "greedy":
            return policies.greedy(scores)
        return policies.epsilon_greedy(scores, cfg.epsilon)
