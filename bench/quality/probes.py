"""Generality probes: worlds whose effects run along axes none of Keyart's named crosses
(tone x genre taste, cast x actor affinity, small screen x faces/text/group) covers.

Not part of `make bench-quality`'s default worlds and not targets: they check that what
the learner gained on the three benchmark worlds carries to effects it was never shown,
the way the worlds we do not see will test it. Run one with

    PYTHONPATH=bench .venv/bin/python -m quality.run --worlds probe_axes --out /tmp/probe.json

Effects are logits of P(start) (and P(stay | start) where named), set once when written.
"""

from __future__ import annotations

import numpy as np

from quality.world_base import G, SyntheticWorld

WARM = np.array([0, 1, 2])  # red, orange, yellow
COOL = np.array([4, 5, 7])  # teal, blue, mono
CLOSEUP, CHARACTER, SCENE, ENSEMBLE, TITLE_CARD = range(5)
MOBILE = 2
US, GB = 0, 1
MOODS = ("dark", "bright", "tense", "cozy", "epic")


def _leans(taste: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dark, light, epic) shares of a member's genre taste."""
    dark = taste[:, [G["horror"], G["thriller"], G["crime"]]].sum(1)
    light = taste[:, [G["comedy"], G["family"], G["romance"]]].sum(1)
    epic = taste[:, [G["action"], G["scifi"]]].sum(1)
    return dark, light, epic


class ProbeAxes(SyntheticWorld):
    """Palette x genre taste, tenure x style, country x text, viewing volume x contrast.

    - palette: +1.4 x (dark - light taste share) for cool palettes, the opposite for warm
      ones (and +0.5 x the same on staying);
    - members of under 60 days: +0.8 closeups, -0.4 text; of over 700 days: +0.5 title
      cards, +0.3 scenes, -0.2 closeups;
    - outside the US and GB: -0.7 for text;
    - +0.8 x log(viewing activity) x (contrast - 0.5);
    - intrinsic appeal N(0, 0.25). Pools of 2 to 9 images.
    """

    name = "probe_axes"
    seed = 404
    quality_minutes = 12.0
    taste_concentration = 0.5

    def pool_sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(2, 10, n)

    def logits(self, m, i, dev, ctry):
        t = self.i_title[i]
        a = self.match(m, t)
        dark, light, _ = _leans(self.m_taste[m])
        pal = self.i_palette[i]
        shade = np.isin(pal, COOL).astype(float) - np.isin(pal, WARM)
        tenure = self.m_tenure[m]
        newbie, veteran = tenure < 60, tenure > 700
        style, text = self.i_style[i], self.i_text[i]
        english = np.isin(ctry, [US, GB])
        image = (self.i_quality[i] + 1.4 * (dark - light) * shade
                 + newbie * (0.8 * (style == CLOSEUP) - 0.4 * text)
                 + veteran * (0.5 * (style == TITLE_CARD) + 0.3 * (style == SCENE) - 0.2 * (style == CLOSEUP))
                 - 0.7 * (~english) * text
                 + 0.8 * np.log(self.m_activity[m]) * (self.i_contrast[i] - 0.5))
        start = -2.0 + 0.5 * np.log(self.t_pop[t]) + 2.0 * (a - 0.1) + image
        stay = 0.3 + 1.2 * (a - 0.1) + 0.5 * (dark - light) * shade
        return start, stay


class ProbeTagger(SyntheticWorld):
    """The customer's own declared image attributes drive appeal (manifest `image_attributes`).

    - mood (categorical, from the customer's tagger): +1.8 x the member's dark share for
      dark and tense, x their light share for bright and cozy, x their action/scifi share
      for epic (+0.6 x the first two on staying);
    - saliency (numeric): +1.6 x (saliency - 0.5) on MOBILE;
    - intrinsic appeal N(0, 0.15). Pools of 2 to 6 images.
    """

    name = "probe_tagger"
    seed = 505
    quality_minutes = 12.0
    taste_concentration = 0.4

    def pool_sizes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(2, 7, n)

    def image_attributes(self, rng: np.random.Generator) -> None:
        self._default_image_attributes(rng)
        n = self.n_images
        self.i_mood = rng.integers(len(MOODS), size=n)
        self.i_saliency = rng.beta(2.0, 2.0, n).round(3)
        self.i_quality = rng.normal(0.0, 0.15, n)

    def tables(self):
        tables = super().tables()
        tables["images"]["mood"] = [MOODS[k] for k in self.i_mood]
        tables["images"]["saliency"] = self.i_saliency.astype(float)
        return tables

    def manifest(self) -> dict:
        return {**super().manifest(), "image_attributes": {"mood": "categorical", "saliency": "numeric"}}

    def logits(self, m, i, dev, ctry):
        t = self.i_title[i]
        a = self.match(m, t)
        dark, light, epic = _leans(self.m_taste[m])
        mood = self.i_mood[i]
        fits = dark * np.isin(mood, [0, 2]) + light * np.isin(mood, [1, 3])
        image = (self.i_quality[i] + 1.8 * fits + 1.8 * epic * (mood == 4)
                 + (dev == MOBILE) * 1.6 * (self.i_saliency[i] - 0.5))
        start = -2.6 + 0.5 * np.log(self.t_pop[t]) + 2.0 * (a - 0.1) + image
        stay = 0.3 + 1.2 * (a - 0.1) + 0.6 * fits
        return start, stay


PROBES: dict[str, type[SyntheticWorld]] = {w.name: w for w in (ProbeAxes, ProbeTagger)}
