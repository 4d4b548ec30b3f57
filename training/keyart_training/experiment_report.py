"""An online experiment's report, from the decision log: cells on-policy, shadows off-policy.

Cells are measured on what they served: take fraction (quality plays / impressions) with
member-level bootstrap intervals (a member's decisions are resampled together: they are
correlated), and lift against the control cell. Members never switch cell, so the cells
are independent samples and one resampling of members gives the lift's interval.

Shadows were never shown. Each served decision logs the shadow's probability of the image
really served (`served_propensity`) and of its own greedy choice, its expected score over
the candidates and its score of the served image, so its value is estimated exactly from
the served propensities: IPS (mean of r * pi/mu), SNIPS (sum r * pi/mu over sum pi/mu)
and DR (the shadow's own expectation, corrected by pi/mu * (r - its score of the served
image)); all unbiased when the served policy gave every candidate a positive probability
(the ESS says how many decisions the estimate is worth). Against the control the shadow is
compared with the control cell's take fraction: its SNIPS value on each cell's decisions,
pooled over cells by effective sample size (the uniformly explored cells count most).

A verdict per comparison: "significant" (interval above 0), "harmful" (interval below 0),
or "not yet (n needed ≈ N per cell)" from the interval's width and the observed lift.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from keyart.errors import KeyartError
from keyart_training.data.dataset import quality_labels
from keyart_training.ope.estimators import bootstrap_counts, percentile_interval

# schema id -> the column of `title_interacted` in that feature space (None: unknown)
FamiliarColumn = Callable[[str], "int | None"]


@dataclass(frozen=True)
class ReportConfig:
    min_minutes: float
    bootstrap: int = 200
    seed: int = 7
    confidence: float = 0.95
    power: float = 0.8  # of the sample size quoted by "not yet"


class ReportError(KeyartError):
    """The log cannot give this report (no such experiment, no rows)."""


def _ratio_boot(counts: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    n, d = counts @ num, counts @ den
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, n / np.where(d > 0, d, 1.0), np.nan)


def _verdict(lift: float, lo: float, hi: float, n_now: int, cfg: ReportConfig) -> dict[str, Any]:
    """significant / harmful / not yet, with the sample size the observed lift would need."""
    if np.isfinite(lo) and lo > 0:
        return {"verdict": "significant", "n_needed": None}
    if np.isfinite(hi) and hi < 0:
        return {"verdict": "harmful", "n_needed": None}
    z = norm.ppf(1 - (1 - cfg.confidence) / 2) + norm.ppf(cfg.power)
    se = (hi - lo) / (2 * norm.ppf(1 - (1 - cfg.confidence) / 2)) if np.isfinite(hi - lo) else float("nan")
    if not (np.isfinite(se) and se > 0 and lift != 0 and n_now > 0):
        return {"verdict": "not yet (no difference observed)", "n_needed": None}
    needed = int(np.ceil(n_now * (z * se / abs(lift)) ** 2))  # se shrinks as 1/sqrt(n)
    return {"verdict": f"not yet (n needed ≈ {needed:,} per cell)", "n_needed": needed}


def _shadow_rows(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per shadow name: served rows with that shadow's choice, its fields as columns."""
    records: dict[str, list[dict[str, Any]]] = {}
    for row, text in zip(frame.index, frame["shadows"].fillna("[]")):
        for choice in json.loads(text or "[]"):
            records.setdefault(choice["name"], []).append({"row": row, **choice})
    return {name: pd.DataFrame(rows).set_index("row") for name, rows in records.items()}


def experiment_report(frame: pd.DataFrame, experiment_id: str, control: str, cfg: ReportConfig,
                      familiar_column: FamiliarColumn | None = None) -> dict[str, Any]:
    """The report of `experiment_id` over exported decision-log rows (any other rows are ignored)."""
    if "experiment" not in frame.columns:
        raise ReportError("the log has no experiment column: it was exported before experiments existed")
    rows = frame[frame["experiment"] == experiment_id].reset_index(drop=True)
    if not len(rows):
        raise ReportError(f"no decisions of experiment {experiment_id!r} in the log")
    y = quality_labels(rows, cfg.min_minutes)
    members = rows["member_id"].astype(str).to_numpy()
    counts = bootstrap_counts(len(rows), cfg.bootstrap, cfg.seed, clusters=members)
    cells = rows["cell"].astype(str).to_numpy()
    ones = np.ones(len(rows))
    familiar = _familiar(rows, familiar_column)

    def take(mask: np.ndarray) -> tuple[float, np.ndarray]:
        m = mask.astype(float)
        value = float((y * m).sum() / m.sum()) if m.sum() else float("nan")
        return value, _ratio_boot(counts, y * m, ones * m)

    control_value, control_boot = take(cells == control)
    out_cells = []
    for name in sorted(set(cells), key=lambda c: (c != control, c)):
        mask = cells == name
        value, boot = take(mask)
        lo, hi = percentile_interval(boot, cfg.confidence)
        cell: dict[str, Any] = {
            "name": name, "impressions": int(mask.sum()), "members": int(len(set(members[mask]))),
            "quality_plays": int(y[mask].sum()), "take_fraction": value, "lo": lo, "hi": hi,
            "guardrails": _guardrails(rows[mask]),
        }
        if name != control:
            lift_lo, lift_hi = percentile_interval(boot - control_boot, cfg.confidence)
            lift = value - control_value
            n_now = int(min(mask.sum(), (cells == control).sum()))
            cell["lift"] = {"value": lift, "lo": lift_lo, "hi": lift_hi, **_verdict(lift, lift_lo, lift_hi, n_now, cfg)}
        cell["breakdowns"] = _breakdowns(rows, y, mask, cells == control, familiar)
        out_cells.append(cell)
    shadows = [_shadow(name, sh, rows, y, counts, cells == control, cfg)
               for name, sh in sorted(_shadow_rows(rows).items())]
    return {
        "experiment": experiment_id, "control": control, "impressions": int(len(rows)),
        "members": int(len(set(members))), "bootstrap": cfg.bootstrap, "confidence": cfg.confidence,
        "min_minutes": cfg.min_minutes, "cells": out_cells, "shadows": shadows,
    }


def _familiar(rows: pd.DataFrame, familiar_column: FamiliarColumn | None) -> np.ndarray | None:
    """Per row: 'familiar' (the member watched or started the title) / 'unfamiliar' / '' unknown."""
    if familiar_column is None or "features" not in rows.columns:
        return None
    out = np.full(len(rows), "", dtype=object)
    for k, (schema, x) in enumerate(zip(rows["feature_schema"], rows["features"])):
        col = familiar_column(str(schema)) if schema else None
        if col is not None and x is not None and len(x) > col:
            out[k] = "familiar" if x[col] > 0.5 else "unfamiliar"
    return out


def _breakdowns(rows: pd.DataFrame, y: np.ndarray, mask: np.ndarray, control: np.ndarray,
                familiar: np.ndarray | None) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, np.ndarray] = {"device": rows["device"].astype(str).to_numpy(),
                                 "country": rows["country"].astype(str).to_numpy()}
    if familiar is not None:
        by = {"title": familiar, **by}
    out: dict[str, list[dict[str, Any]]] = {}
    for column, values in by.items():
        groups = []
        for v in sorted(set(values[mask])):
            g, gc = mask & (values == v), control & (values == v)
            value = float(y[g].mean())
            groups.append({"value": str(v) or "unknown", "impressions": int(g.sum()), "take_fraction": value,
                           "lift": value - float(y[gc].mean()) if gc.any() else None})
        out[column] = groups
    return out


def _guardrails(rows: pd.DataFrame) -> dict[str, Any]:
    fallback = rows["fallback_reason"].fillna("").astype(bool).to_numpy()
    pages = rows.drop_duplicates("request_id")
    latency = pages["latency_ms"].to_numpy(float) if "latency_ms" in pages.columns else np.zeros(0)
    return {"fallback_share": float(fallback.mean()) if len(fallback) else 0.0,
            "pages": int(len(pages)),
            "p50_ms": float(np.quantile(latency, 0.5)) if len(latency) else float("nan"),
            "p99_ms": float(np.quantile(latency, 0.99)) if len(latency) else float("nan")}


def _shadow(name: str, sh: pd.DataFrame, rows: pd.DataFrame, y: np.ndarray, counts: np.ndarray,
            control: np.ndarray, cfg: ReportConfig) -> dict[str, Any]:
    idx = sh.index.to_numpy()
    used = np.zeros(len(rows), dtype=bool)
    used[idx] = True
    mu = np.zeros(len(rows))
    mu[idx] = rows["propensity"].to_numpy(float)[idx]
    w = np.zeros(len(rows))
    w[idx] = sh["served_propensity"].to_numpy(float) / mu[idx]
    dm, q = np.zeros(len(rows)), np.zeros(len(rows))
    dm[idx], q[idx] = sh["expected_score"].to_numpy(float), sh["served_score"].to_numpy(float)
    u = used.astype(float)
    dr_terms = (dm + w * (y - q)) * u

    def est(num: np.ndarray, den: np.ndarray) -> dict[str, float]:
        value = float(num.sum() / den.sum()) if den.sum() else float("nan")
        lo, hi = percentile_interval(_ratio_boot(counts, num, den), cfg.confidence)
        return {"value": value, "lo": lo, "hi": hi}

    ips, snips, dr = est(w * y, u), est(w * y, w), est(dr_terms, u)
    ws = w[used]
    ess = float(ws.sum() ** 2 / (ws * ws).sum()) if (ws * ws).sum() > 0 else 0.0
    served = est(y * u, u)
    # Against the control: the shadow's value (SNIPS: bounded, and free of its own calibration,
    # unlike DR's control variate) on each cell's decisions, cells weighted by their effective
    # sample size (each cell is a random share of members, so each estimates the same value; the
    # explored ones more precisely), minus the control's own take fraction; one resampling of
    # members for both, so the interval is paired. The weights come from the propensities
    # alone: weights from the bootstrap variance, which grows with the estimate for a rare
    # reward, favour the cells that happened to estimate low and bias the pooled value down.
    cells = rows["cell"].astype(str).to_numpy()
    parts, precisions = [], []
    for cell in sorted(set(cells[used])):
        m = (used & (cells == cell)).astype(float)
        wm = w * m
        cell_ess = float(wm.sum() ** 2 / (wm * wm).sum()) if (wm * wm).sum() > 0 else 0.0
        if m.sum() >= 30 and cell_ess > 0:
            parts.append((float((w * y * m).sum() / wm.sum()), _ratio_boot(counts, w * y * m, wm)))
            precisions.append(cell_ess)
    c = control.astype(float)
    if parts and c.sum():
        lam = np.array(precisions) / np.sum(precisions)
        value = float(sum(weight * v for weight, (v, _) in zip(lam, parts)))
        boot = sum(weight * b for weight, (_, b) in zip(lam, parts))
        control_boot = _ratio_boot(counts, y * c, c)
        lift = value - float((y * c).sum() / c.sum())
        lift_lo, lift_hi = percentile_interval(boot - control_boot, cfg.confidence)
    else:
        value, lift, lift_lo, lift_hi = float("nan"), float("nan"), float("nan"), float("nan")
    agree = sh["image_id"].to_numpy() == rows["image_id"].to_numpy()[idx]
    return {
        "name": name, "model_version": str(sh["model_version"].iloc[-1]), "decisions": int(used.sum()),
        "ips": ips["value"], "lo": ips["lo"], "hi": ips["hi"], "snips": snips, "dr": dr, "ess": ess,
        "max_weight": float(ws.max()) if len(ws) else float("nan"),
        "agreement": float(agree.mean()) if len(agree) else float("nan"),
        "served_take_fraction": served,
        "vs_control": {"estimator": "snips, cells pooled by effective sample size", "shadow_value": value,
                       "control_impressions": int(c.sum()), "value": lift, "lo": lift_lo, "hi": lift_hi,
                       **_verdict(lift, lift_lo, lift_hi, int(min(c.sum(), used.sum())), cfg)},
    }


def report_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    e = html.escape

    def pct(v: Any) -> str:
        return "–" if v is None or not np.isfinite(v) else f"{100 * v:.2f}%"

    rows = []
    for c in report["cells"]:
        lift = c.get("lift")
        g = c["guardrails"]
        rows.append(
            f"<tr><th>{e(c['name'])}</th><td>{c['impressions']:,}</td><td>{c['quality_plays']:,}</td>"
            f"<td>{pct(c['take_fraction'])} [{pct(c['lo'])}, {pct(c['hi'])}]</td>"
            + (f"<td>{pct(lift['value'])} [{pct(lift['lo'])}, {pct(lift['hi'])}]</td><td>{e(lift['verdict'])}</td>"
               if lift else "<td>control</td><td></td>")
            + f"<td>{pct(g['fallback_share'])}</td><td>{g['p99_ms']:.1f}</td></tr>")
    shadow_rows = []
    for s in report["shadows"]:
        vc = s["vs_control"]
        shadow_rows.append(
            f"<tr><th>{e(s['name'])}</th><td>{e(s['model_version'])}</td><td>{s['decisions']:,}</td>"
            f"<td>{pct(s['ips'])} [{pct(s['lo'])}, {pct(s['hi'])}]</td>"
            f"<td>{pct(s['snips']['value'])}</td><td>{pct(s['dr']['value'])} [{pct(s['dr']['lo'])}, "
            f"{pct(s['dr']['hi'])}]</td><td>{s['ess']:,.0f}</td><td>{pct(s['agreement'])}</td>"
            f"<td>{pct(vc['value'])} [{pct(vc['lo'])}, {pct(vc['hi'])}]</td><td>{e(vc['verdict'])}</td></tr>")
    breakdowns = []
    for c in report["cells"]:
        for column, groups in c["breakdowns"].items():
            cells = "".join(f"<td>{e(g['value'])}: {pct(g['take_fraction'])} ({g['impressions']:,})</td>"
                            for g in groups)
            breakdowns.append(f"<tr><th>{e(c['name'])}</th><td>{e(column)}</td>{cells}</tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Experiment {e(report['experiment'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Experiment {e(report['experiment'])}</h1>
<p>{report['impressions']:,} impressions of {report['members']:,} members; intervals: {report['confidence']:.0%},
member-level bootstrap ({report['bootstrap']} resamples);
a quality play is {report['min_minutes']:g} minutes or more.</p>
<h2>Cells</h2><table><tr><th>cell</th><th>impressions</th><th>quality plays</th><th>take fraction</th>
<th>lift vs {e(report['control'])}</th><th>verdict</th><th>fallback share</th><th>p99 ms</th></tr>
{''.join(rows)}</table>
<h2>Shadows (never shown; off-policy on the served propensities)</h2><table><tr><th>shadow</th><th>model</th>
<th>decisions</th><th>IPS</th><th>SNIPS</th><th>DR</th><th>ESS</th><th>agreement</th><th>vs control (DR)</th>
<th>verdict</th></tr>{''.join(shadow_rows)}</table>
<h2>Breakdowns</h2><table>{''.join(breakdowns)}</table></body></html>"""
