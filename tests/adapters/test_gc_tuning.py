"""A serving process, and the decision-log writer's child, tune garbage collection once started."""

from __future__ import annotations

import gc

from keyart.adapters.gc_tuning import tune_gc_for_serving


def test_startup_objects_are_frozen_and_the_young_threshold_raised() -> None:
    before = gc.get_threshold()
    try:
        tune_gc_for_serving(20_000)
        assert gc.get_threshold() == (20_000, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # this test process's modules, at least
        short_lived = [[k] for k in range(5_000)]  # a page's worth of containers, and more
        assert gc.get_count()[0] >= 5_000  # no young collection ran
        del short_lived
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_zero_keeps_pythons_defaults() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    tune_gc_for_serving(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
