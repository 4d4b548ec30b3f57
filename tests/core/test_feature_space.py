"""Open vocabularies: the feature space comes from the catalog and travels with the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny import NOW, make_catalog, make_context, make_member, make_model, open_catalog

from keyart.core.feature_space import FeatureSpace, FeatureSpaceError, translate_context
from keyart.core.featurize import CatalogIndex, build_matrix
from keyart.core.page import PageRequest, PageService
from keyart.core.ranker import PolicyConfig, Ranker
from keyart.domain import MemberFeatures, TitleRequest


def test_space_holds_the_catalogs_own_values_and_attributes() -> None:
    space = FeatureSpace.from_catalog(open_catalog())
    assert space.genres == ("anime", "comedy", "romance")
    assert space.vocabularies["country"] == ("NZ", "US")
    assert space.vocabularies["expression"] == ("happy", "intense", "wistful")  # "" is unknown, not a value
    assert space.vocabularies["attr_cv_scene"] == ("beach", "city")
    assert {"genre_anime", "attr_cv_smile", "attr_cv_scene", "language"} <= set(space.names)
    assert "attr_cv_scene" in space.categorical and "attr_cv_smile" not in space.categorical
    # A tone conveys the genre it is mapped to, or the genre of its name; else none.
    assert space.tone_genre == {"romantic": "romance", "anime": "anime", "comedy": "comedy"}
    assert space.code("country", "NZ") == 0 and space.code("country", "FR") == 2  # unseen: the unknown code
    assert space.value("country", 2.0) == "unknown"
    assert FeatureSpace.from_dict(space.to_dict()) == space
    assert FeatureSpace.from_dict(space.to_dict()).schema_id == space.schema_id
    other = FeatureSpace.from_catalog(dataclasses.replace(open_catalog(), vocabularies={"country": ("NZ",)}))
    assert other.schema_id != space.schema_id


@pytest.mark.parametrize("bad, message", [
    ([], "not a JSON object"),
    ({"format": "other"}, "format"),
    ({"format": "keyart-feature-space/1", "genres": "drama", "vocabularies": {}}, "genres"),
    ({"format": "keyart-feature-space/1", "genres": [], "vocabularies": {"country": []}}, "lacks"),
])
def test_a_bad_stored_space_names_its_key(bad, message) -> None:
    with pytest.raises(FeatureSpaceError, match=message):
        FeatureSpace.from_dict(bad)


def test_rows_carry_attributes_codes_and_unknowns() -> None:
    catalog = open_catalog()
    index = CatalogIndex.build(catalog)
    space = index.space
    member = MemberFeatures("m1", "NZ", "mi", "TV", float("nan"), {"anime": 0.7, "comedy": 0.2, "romance": 0.1},
                            {"a1": 0.5})
    ctx = dataclasses.replace(make_context(), country="NZ", language="mi")
    ids = list(catalog.pool("t1"))
    rows = np.array([index.image_row[i] for i in ids])
    x = build_matrix(index, member, ctx, ["t1"], rows, np.zeros(len(ids), int))
    col = space.index
    for r, image_id in enumerate(ids):
        im = catalog.images[image_id]
        assert x[r, col["attr_cv_smile"]] == pytest.approx(im.attributes["cv_smile"])
        assert x[r, col["attr_cv_scene"]] == space.code("attr_cv_scene", str(im.attributes["cv_scene"]))
        assert x[r, col["expression"]] == space.code("expression", im.expression)
        genre = space.tone_genre.get(im.tone)
        if genre is None:
            assert np.isnan(x[r, col["tone_affinity"]])  # a tone that conveys no genre: unknown, not 0
        else:
            assert x[r, col["tone_affinity"]] == pytest.approx(member.genre_affinity[genre])
    assert (x[:, col["country"]] == 0).all() and (x[:, col["language"]] == 1).all()
    assert np.isnan(x[:, col["tenure_days"]]).all()


def test_translate_context_matches_names_and_values() -> None:
    old = FeatureSpace.from_catalog(open_catalog())
    grown = open_catalog()
    grown.titles["t0"] = dataclasses.replace(grown.titles["t0"], genres=("western",))
    grown.vocabularies = {"country": ("AU", "NZ", "US"), "language": ("en-NZ", "mi")}
    new = FeatureSpace.from_catalog(grown)
    index = CatalogIndex.build(open_catalog(), old)
    member = MemberFeatures("m1", "US", "mi", "TV", 10.0, {"anime": 0.6, "comedy": 0.3, "romance": 0.1}, {})
    ctx = dataclasses.replace(make_context(), country="US", language="mi")
    x = build_matrix(index, member, ctx, ["t1"], np.array([0]), np.array([0]))
    out = translate_context(x, old, new)
    assert out.shape == (1, new.context_width)
    assert out[0, new.index["country"]] == new.code("country", "US") == 2  # the code moved: the value did not
    assert np.isnan(out[0, new.index["genre_western"]])  # a genre the log did not have: unknown
    for name in ("genre_anime", "tenure_days", "language", "history_views", "title_genre_affinity"):
        assert out[0, new.index[name]] == pytest.approx(x[0, old.index[name]])


def test_a_model_serves_in_its_own_space_when_the_catalog_grows() -> None:
    """A model trained before a new country and tone existed: serving featurizes in the model's
    space (the new values get the unknown code) and logs under its id."""
    model = make_model()
    catalog = make_catalog()
    grown = dataclasses.replace(catalog, vocabularies={"country": ("US", "GB", "BR", "NZ"), "language": ("en-US",)},
                                images={k: dataclasses.replace(v, tone="noir") if k.endswith("-i0") else v
                                        for k, v in catalog.images.items()})
    assert FeatureSpace.from_catalog(grown) != model.space
    with pytest.raises(ValueError, match="another feature space"):
        Ranker(CatalogIndex.build(grown), model, PolicyConfig())

    class Members:
        def get(self, member_id: str) -> MemberFeatures:
            return make_member(member_id)

    logged: list = []

    class Sink:
        def submit_page(self, page) -> None:
            logged.extend(page.impressions())

        def submit_outcomes(self, outcomes) -> None:
            pass

    service = PageService(CatalogIndex.build(grown), Members(), PolicyConfig(), sink=Sink())  # type: ignore[arg-type]
    page = PageRequest("r1", "m1", dataclasses.replace(make_context(), country="NZ"),
                       [TitleRequest("t0"), TitleRequest("t1")])
    service.rank(page, now=NOW)
    assert {r.feature_schema for r in logged} == {FeatureSpace.from_catalog(grown).schema_id}  # day one: uniform
    service.set_model(model)
    assert service.index.space is model.space and service.index.catalog is grown
    logged.clear()
    result = service.rank(page, now=NOW)
    assert result.policy != "uniform" and {r.feature_schema for r in logged} == {model.space.schema_id}
    x = np.frombuffer(logged[0].features, "<f4")
    assert x[model.space.index["country"]] == len(model.space.vocabularies["country"])  # NZ: unknown to the model
    service.set_catalog(catalog)  # new artwork: still the model's columns
    assert service.index.space is model.space and service.index.catalog is catalog
    service.close()
