"""The Prometheus alert rules and the Grafana dashboard in k8s/monitoring/ parse, use
only the ranker's metrics (as Ray exports them: prefix `ray_`), and are explained in
k8s/README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
RAY_PREFIX = "ray_"  # Ray's Prometheus export prefixes application metrics with "ray_"
# The metrics the ranker exports (services/keyart/adapters/ray_serve/metrics.py), by their names in code.
METRICS = {
    "keyart_fallbacks_total",
    "keyart_log_dropped",
    "keyart_rank_latency_seconds_bucket",
    "keyart_model_info",
    "keyart_decisions_total",
    "keyart_propensity_bucket_total",
    "keyart_log_queue_depth",
    "keyart_log_spooled",
    "keyart_feature_latency_seconds_bucket",
    "keyart_feature_latency_seconds_sum",
    "keyart_feature_latency_seconds_count",
}
EXPORTED = {RAY_PREFIX + m for m in METRICS}
PROMQL_WORDS = {
    # functions
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    # aggregations and keywords
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (label names and functions removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\w+", "", e)  # Grafana variables
    e = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", e)  # numbers
    return {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e) if w not in PROMQL_WORDS}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le) (rate(ray_x_bucket{a="b"}[5m])) / max(y) > 0.5') == {
        "ray_x_bucket",
        "y",
    }
    assert metric_names("absent(ray_keyart_model_info)") == {"ray_keyart_model_info"}


def test_the_metrics_exist_in_the_ranker() -> None:
    source = (ROOT / "services/keyart/adapters/ray_serve/metrics.py").read_text()
    for m in METRICS:
        base = re.sub(r"_(bucket|sum|count)$", "", m) if "latency" in m else m
        if base.startswith("keyart_log_"):
            assert (
                f'"{base.removeprefix("keyart_log_")}"' in source
                and 'f"keyart_log_{name}"' in source
            )
        else:
            assert f'"{base}"' in source, (
                f"{base} is not exported by services/keyart/adapters/ray_serve/metrics.py"
            )


def test_alert_rules_parse_and_use_known_metrics() -> None:
    alerts = rules()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    for r in alerts:
        assert r["expr"].strip() and r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["runbook_url"]
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= EXPORTED, f"{r['alert']} uses unknown metrics {used - EXPORTED}"
    exprs = " ".join(r["expr"] for r in alerts)
    for required in (
        "ray_keyart_fallbacks_total",
        "ray_keyart_log_dropped",
        "ray_keyart_rank_latency_seconds_bucket",
        "absent(ray_keyart_model_info)",
    ):
        assert required in exprs
    assert re.search(
        r"histogram_quantile\(0\.99,.*ray_keyart_rank_latency_seconds_bucket.*> 0\.030",
        exprs,
        re.DOTALL,
    )


def test_every_alert_is_explained_in_the_runbook() -> None:
    readme = (ROOT / "k8s/README.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#+\s+(.*)$", readme, re.MULTILINE)}
    for r in rules():
        assert r["alert"].lower() in headings, f"k8s/README.md has no section '### {r['alert']}'"
        assert r["annotations"]["runbook_url"] == f"k8s/README.md#{r['alert'].lower()}"


def test_dashboard_parses_and_uses_known_metrics() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= EXPORTED, f"dashboard uses unknown metrics {used - EXPORTED}"
    for required in (
        "ray_keyart_decisions_total",
        "ray_keyart_fallbacks_total",
        "ray_keyart_propensity_bucket_total",
        "ray_keyart_model_info",
        "ray_keyart_log_queue_depth",
        "ray_keyart_log_spooled",
        "ray_keyart_log_dropped",
        "ray_keyart_feature_latency_seconds_bucket",
    ):
        assert required in used, f"no panel shows {required}"
    assert any('explored="true"' in e for e in exprs), "no exploration-rate panel"


@pytest.mark.parametrize("name", ["servicemonitor.yaml", "kustomization.yaml"])
def test_other_monitoring_files_parse(name: str) -> None:
    assert yaml.safe_load((MONITORING / name).read_text())


def test_servicemonitor_selects_the_metrics_service() -> None:
    sm = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s/base/ranker/service.yaml").read_text()) if d]
    selected = [
        d["metadata"]["name"]
        for d in docs
        if sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    assert selected == ["keyart-ranker-metrics"]
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in docs[1]["spec"]["ports"]}
