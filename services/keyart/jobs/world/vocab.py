"""The vocabularies Keyart's own generators and analysers produce.

The synthetic worlds (demo and benchmark) draw their genres, tones, expressions,
styles, palettes and countries from here, and artwork analysis names palettes and
styles with them. They are not the vocabularies of the product: an imported catalog
brings its own (any genre, tone, ISO 3166-1 country...), and the featurizer reads
them from the catalog (`keyart.core.feature_space`). The import contracts forbid
the decision core and the adapters to import this module.
"""

from __future__ import annotations

GENRES: tuple[str, ...] = (
    "action",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "family",
    "horror",
    "romance",
    "scifi",
    "thriller",
)
# An image's tone is the genre feel it conveys (a kiss reads "romance", a car chase
# "action"), so it is matched against the member's genre affinity.
TONES: tuple[str, ...] = GENRES
EXPRESSIONS: tuple[str, ...] = ("none", "neutral", "happy", "complex")
STYLES: tuple[str, ...] = ("closeup", "character", "scene", "ensemble", "title_card")
PALETTES: tuple[str, ...] = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "mono")
COUNTRIES: tuple[str, ...] = ("US", "GB", "BR", "IN", "JP", "DE", "FR", "MX", "KR", "ES")
