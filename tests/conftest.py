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


# --- a real Cassandra (tests marked `cassandra`; see tests/live_cassandra.py) -------------


@pytest.fixture(scope="session")
def cassandra_nodes(tmp_path_factory):
    """The session's Cassandra nodes (started on first use, stopped at the end)."""
    from live_cassandra import NodePool

    pool = NodePool(tmp_path_factory.mktemp("cassandra"))
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def cassandra_node(cassandra_nodes):
    """A plain node: KEYART_CASSANDRA_HOSTS when set, else one this session starts."""
    return cassandra_nodes.get("plain")


@pytest.fixture(scope="session")
def cassandra_own_node(cassandra_nodes):
    """A plain node this session started, so a test may SIGKILL / SIGSTOP and restart it."""
    return cassandra_nodes.get("own")


@pytest.fixture(scope="session")
def cassandra_secure_node(cassandra_nodes):
    """A node with PasswordAuthenticator (cassandra/cassandra) and client TLS (test CA)."""
    return cassandra_nodes.get("secure")


def pytest_terminal_summary(terminalreporter) -> None:
    from live_cassandra import TIMINGS

    if TIMINGS:
        terminalreporter.write_sep("-", "cassandra nodes")
        for line in TIMINGS:
            terminalreporter.write_line(line)
