"""Stable randomness: a page's uniforms in one call equal the per-title function's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyart.core.stable import stable_uniform, stable_uniforms

_text = st.text(max_size=20)  # any unicode, the separator included


@settings(max_examples=200, deadline=None)
@given(first=_text, varying=st.lists(_text, max_size=8), rest=st.lists(_text, max_size=3))
def test_stable_uniforms_equal_stable_uniform_per_part(first: str, varying: list[str], rest: list[str]) -> None:
    assert stable_uniforms(first, varying, *rest) == [stable_uniform(first, v, *rest) for v in varying]


def test_stable_uniform_is_in_the_unit_interval_and_depends_on_every_part() -> None:
    u = stable_uniform("m1", "t1", "100", "salt")
    assert 0.0 <= u < 1.0
    assert len({u, stable_uniform("m2", "t1", "100", "salt"), stable_uniform("m1", "t2", "100", "salt"),
                stable_uniform("m1", "t1", "101", "salt"), stable_uniform("m1", "t1", "100", "pepper")}) == 5
