"""An online experiment on the synthetic world: served by the page service, logged, reported.

Pages go through `PageService.rank` (cell assignment, shadows, the logged records),
into a real decision-log store; outcomes are drawn from the world's ground truth and
written back as ReportOutcome would; the log is exported as `keyart log export` does.
Beside the log it returns the truth the report estimates, without outcome noise: for a
cell, the mean true quality-play probability of what it served; for a greedy shadow, the
mean true probability of its choices (on all its decisions, and on the control's).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keyart.adapters.decision_log.export import export_parquet
from keyart.adapters.decision_log.sqlite import SqliteLogStore
from keyart.core.experiment import Experiment
from keyart.core.featurize import CatalogIndex
from keyart.core.model import QualityPlayModel
from keyart.core.page import PageRequest, PageService
from keyart.core.ranker import PolicyConfig
from keyart.domain import (
    DEVICES,
    Catalog,
    Impression,
    LoggedPage,
    MemberFeatures,
    Outcome,
    OutcomeKind,
    RequestContext,
    TitleRequest,
)
from keyart.jobs.world.world_model import World
from keyart_training.simulate import HistoricalLookup


class _Collect:
    def __init__(self) -> None:
        self.impressions: list[Impression] = []

    def submit_page(self, page: LoggedPage) -> bool:
        self.impressions.extend(page.impressions())
        return True

    def submit_outcomes(self, records: list[Outcome]) -> bool:
        return True


@dataclass
class ExperimentRun:
    frame: pd.DataFrame  # the exported log of the experiment's decisions, with outcomes
    truth: dict[str, Any]  # {"cells": {name: value}, "shadows": {name: {"value", "vs_control"}}}


def run_experiment(world: World, catalog: Catalog, lookup: HistoricalLookup, serving: QualityPlayModel,
                   experiment: Experiment, models: Mapping[str, QualityPlayModel], policy: PolicyConfig,
                   pages: int = 3000, titles_per_page: int = 10, seed: int = 5, days: float = 2.0) -> ExperimentRun:
    """Serve `pages` pages of the world's members under `experiment` and return the log and truth."""
    rng = np.random.default_rng(seed)
    members = world.members
    start = world.now
    entity = pd.DataFrame({"member_id": members["member_id"].astype(str).to_numpy(),
                           "event_timestamp": pd.to_datetime([start] * len(members), utc=True)})
    features: dict[str, MemberFeatures | None] = dict(zip(entity["member_id"], lookup(entity)))
    sink = _Collect()
    service = PageService(CatalogIndex.build(catalog), members=_Members(features), policy=policy, sink=sink,
                          feature_timeout_s=30.0, request_budget_s=60.0)
    service.set_model(serving)
    service.set_experiment(experiment, models)
    title_ids = np.array(sorted(catalog.titles))
    for k in range(pages):
        m = members.iloc[int(rng.integers(len(members)))]
        device = m["main_device"] if rng.random() < 0.7 else DEVICES[int(rng.integers(len(DEVICES)))]
        when = start + timedelta(seconds=float(rng.uniform(0, days * 86400)))
        ctx = RequestContext(country=m["country"], language=m["language"], device=device, surface="home",
                             client_time=when)
        page = rng.choice(title_ids, size=min(titles_per_page, len(title_ids)), replace=False)
        service.rank(PageRequest(f"sim-{seed}-{k}", str(m["member_id"]), ctx, [TitleRequest(t) for t in page]),
                     now=when)
    service.close()
    imps = [i for i in sink.impressions if not i.fallback_reason]
    mids = np.array([i.member_id for i in imps])
    images = np.array([i.image_id for i in imps])
    devices = np.array([i.device for i in imps])
    countries = np.array([i.country for i in imps])
    played, minutes = world.sample_outcomes(mids, images, devices, rng, countries)
    outcomes = [Outcome(i.decision_id, i.member_id, i.title_id, i.image_id, OutcomeKind.PLAYBACK_PROGRESS,
                        float(mins), i.decided_at + timedelta(minutes=1))
                for i, p, mins in zip(imps, played, minutes) if p]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteLogStore(Path(tmp) / "decisions.sqlite")
        try:
            store.write_impressions(sink.impressions)
            store.write_outcomes(outcomes)
            export_parquet(store, start - timedelta(hours=1), start + timedelta(days=days, hours=1),
                           Path(tmp) / "log.parquet")
        finally:
            store.close()
        frame = pd.read_parquet(Path(tmp) / "log.parquet")
    return ExperimentRun(frame, _truth(world, imps, experiment))


class _Members:
    def __init__(self, features: dict[str, MemberFeatures | None]) -> None:
        self.features = features

    def get(self, member_id: str) -> MemberFeatures | None:
        return self.features.get(member_id)


def _truth(world: World, imps: list[Impression], experiment: Experiment) -> dict[str, Any]:
    def q(images: list[str], rows: list[Impression]) -> np.ndarray:
        return world.quality_play_prob(np.array([i.member_id for i in rows]), np.array(images),
                                       np.array([i.device for i in rows]), np.array([i.country for i in rows]))

    served = q([i.image_id for i in imps], imps)
    cells = np.array([i.cell for i in imps])
    truth: dict[str, Any] = {"cells": {c.name: float(served[cells == c.name].mean()) for c in experiment.cells
                                       if (cells == c.name).any()}, "shadows": {}}
    for sh in experiment.shadows:
        rows = [(k, c) for k, i in enumerate(imps) for c in i.shadows if c.name == sh.name]
        if not rows:
            continue
        idx = np.array([k for k, _ in rows])
        value = q([c.image_id for _, c in rows], [imps[k] for k in idx])  # greedy: its choice, certainly
        control = cells[idx] == experiment.control
        truth["shadows"][sh.name] = {
            "value": float(value.mean()),
            "vs_control": float((value[control] - served[idx][control]).mean()) if control.any() else float("nan"),
        }
    return truth

