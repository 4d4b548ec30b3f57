"""Settings: KEYART_* variables, validated, with the documented aliases."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keyart.settings import KeyartSettings


def test_cassandra_hosts_alias(monkeypatch):
    monkeypatch.setenv("KEYART_CASSANDRA_HOSTS", "10.0.0.1,10.0.0.2")
    assert KeyartSettings().cassandra_contact_points == "10.0.0.1,10.0.0.2"
    monkeypatch.delenv("KEYART_CASSANDRA_HOSTS")
    monkeypatch.setenv("KEYART_CASSANDRA_CONTACT_POINTS", "db")
    assert KeyartSettings().cassandra_contact_points == "db"
    assert KeyartSettings(cassandra_contact_points="x").cassandra_contact_points == "x"


def test_bad_values_are_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("KEYART_EPSILON", "1.5")
    with pytest.raises(ValidationError, match="epsilon"):
        KeyartSettings()
