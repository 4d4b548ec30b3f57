"""The fast record builders make the same frozen records as the dataclass constructors."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyart.domain import (
    CropInfo,
    Impression,
    LoggedPage,
    Selection,
    ShadowChoice,
    build_impression,
    build_impressions,
    build_selection,
    frozen_builder,
)

SHADOW = ShadowChoice(name="s", model_version="v2", image_id="i2", propensity=0.5, served_propensity=0.25,
                      expected_score=0.1, served_score=0.2)
SELECTION = dict(title_id="t1", image_id="t1-02", lineage_id="L1", propensity=0.25, score=0.125, explored=True,
                 decision_id="d1", fallback_reason="", position=3,
                 features=np.array([1.0, 2.5, np.nan], "<f4").tobytes(),
                 crop=CropInfo(aspect_ratio="16:9", variant_image_id="t1-02-16x9", x=0, y=10, width=640,
                               height=360))
IMPRESSION = dict(decision_id="d1", request_id="r1", member_id="m1", title_id="t1", image_id="t1-02",
                  lineage_id="L1", propensity=0.25, score=0.125, explored=False, policy="epsilon_greedy",
                  model_version="v1", position=3, country="US", language="en", device="TV", surface="home",
                  decided_at=datetime(2026, 12, 4, tzinfo=UTC), fallback_reason="", feature_schema="abc",
                  features=np.array([1.0, 2.0], "<f4").tobytes(), actor_affinity=(("a1", 0.5),), experiment="e",
                  cell="treatment",
                  shadows=(SHADOW,), latency_ms=1.5)


def _subsets(full: dict, cls: type) -> st.SearchStrategy[dict]:
    """Every required field, and any subset of the fields that have defaults."""
    optional = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
    return st.sets(st.sampled_from(optional)).map(lambda keep: {k: v for k, v in full.items()
                                                               if k not in optional or k in keep})


@settings(max_examples=60, deadline=None)
@given(values=_subsets(IMPRESSION, Impression))
def test_build_impression_is_the_constructor(values: dict) -> None:
    built, made = build_impression(**values), Impression(**values)
    assert built == made and hash(built) == hash(made) and type(built) is Impression
    assert dataclasses.asdict(built) == dataclasses.asdict(made)
    assert dataclasses.replace(built, image_id="x") == dataclasses.replace(made, image_id="x")


@settings(max_examples=60, deadline=None)
@given(values=_subsets(IMPRESSION, Impression), split=st.integers(0, 30), n=st.integers(0, 3))
def test_build_impressions_is_the_constructor(values: dict, split: int, n: int) -> None:
    """Any split of the fields into shared and per-record ones gives the constructor's records,
    each its own: changing one record's dict never shows in another."""
    names = tuple(sorted(values))[:split]
    shared = {k: v for k, v in values.items() if k not in names}
    rows = [tuple(f"{values[k]}-{i}" if k == "decision_id" else values[k] for k in names) for i in range(n)]
    built = build_impressions(shared, names, rows)
    want = [Impression(**{**values, **dict(zip(names, row))}) for row in rows]
    assert built == want and [hash(b) for b in built] == [hash(w) for w in want]
    assert all(type(b) is Impression for b in built)
    assert len({id(b.__dict__) for b in built}) == n


def test_build_impressions_refuses_unknown_and_missing_fields() -> None:
    shared = {k: v for k, v in IMPRESSION.items() if k != "member_id"}
    with pytest.raises(TypeError, match=r"missing fields \['member_id'\]"):
        build_impressions(shared, ("decision_id",), [("d",)])
    with pytest.raises(TypeError, match=r"unknown fields \['colour'\]"):
        build_impressions(IMPRESSION, ("colour",), [("red",)])


def test_a_logged_page_is_its_impressions_and_refuses_a_row_of_another_length() -> None:
    names = ("decision_id", "title_id")
    shared = {k: v for k, v in IMPRESSION.items() if k not in names}
    page = LoggedPage(shared, names, [("d1", "t1"), ("d2", "t2")])
    assert len(page) == 2
    assert page.impressions() == [Impression(**{**IMPRESSION, "decision_id": d, "title_id": t})
                                  for d, t in page.rows]
    with pytest.raises(TypeError, match="row's length"):  # zip would silently drop the extra value
        LoggedPage(shared, names, [("d1", "t1", "x")]).impressions()


@settings(max_examples=30, deadline=None)
@given(values=_subsets(SELECTION, Selection))
def test_build_selection_is_the_constructor(values: dict) -> None:
    built = build_selection(**values)
    assert built == Selection(**values) and repr(built) == repr(Selection(**values))


def test_built_records_stay_frozen_and_do_not_share_state() -> None:
    a = build_selection(**{k: v for k, v in SELECTION.items() if k != "fallback_reason"})
    b = build_selection(**{k: v for k, v in SELECTION.items() if k != "fallback_reason"})
    with pytest.raises(FrozenInstanceError):
        a.image_id = "other"  # type: ignore[misc]
    assert a.fallback_reason == "" and a.__dict__ is not b.__dict__


def test_a_default_factory_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        items: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="WithFactory.items has a default factory"):
        frozen_builder(WithFactory)
