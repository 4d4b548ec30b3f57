"""Shared fixtures."""

from __future__ import annotations

import pytest
from tiny import make_catalog, make_model

from keyart.core.featurize import CatalogIndex
from keyart.core.model import QualityPlayModel
from keyart.domain import Catalog


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    return make_catalog()


@pytest.fixture(scope="session")
def tiny_index(tiny_catalog: Catalog) -> CatalogIndex:
    return CatalogIndex.build(tiny_catalog)


@pytest.fixture(scope="session")
def tiny_model() -> QualityPlayModel:
    return make_model()


@pytest.fixture(scope="session")
def platform_settings(tmp_path_factory):
    """World + Feast + a trained, promoted model in a temporary data dir (built once)."""
    from platform_data import build_platform

    return build_platform(tmp_path_factory.mktemp("platform"))
