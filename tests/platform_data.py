"""A small but real platform data dir: world, Feast store, bootstrap model."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from keyart.adapters.ports import free_loopback_port
from keyart.app.build import apply_features, build_world_and_features, train_on_simulated_log
from keyart.settings import KeyartSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def free_port() -> int:
    return free_loopback_port()


def build_platform(data_dir: Path, **overrides) -> KeyartSettings:
    settings = KeyartSettings(
        data_dir=data_dir,
        feature_repo_dir=REPO_ROOT / "features",
        grpc_port=free_port(),
        metrics_port=free_port(),
        http_port=free_port(),
        # Generous budgets: CI machines are shared; timeouts are tested in tests/api.
        feature_timeout_ms=2000.0,
        request_budget_ms=4000.0,
        **overrides,
    )
    # A fixed end of history: the same commit gives the same world, model and figures on any day.
    build_world_and_features(settings, seed=3, members=300, titles=60, now=WORLD_NOW)
    apply_features(settings)
    train_on_simulated_log(settings, pages=600, seed=5)
    return settings
