"""HTML report of an offline evaluation, with embedded plots (matplotlib, PNG in base64).

`write_report(result, out_dir)` writes `out_dir/evaluation.html` and
`out_dir/evaluation.json` (the figures the plots show); `evaluate` writes them next
to the candidate model (`models/<version>/evaluation/`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from keyart_training.ope.estimators import ESTIMATORS

TONE_COLOURS = {
    "action": "#d62728", "comedy": "#ffbf00", "crime": "#555555", "documentary": "#8c564b",
    "drama": "#1f77b4", "family": "#2ca02c", "horror": "#3b0a45", "romance": "#e377c2",
    "scifi": "#17becf", "thriller": "#7f7f7f",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _main_estimator(result: dict[str, Any]) -> str:
    some: dict[str, Any] = next(iter(result["policies"].values()), {})
    for name in ("dr", "snips", "ips", "replay"):
        if name in some:
            return name
    return "ips"


def plot_policies(result: dict[str, Any]) -> str:
    plt = _plt()
    policies = list(result["policies"])
    estimators = sorted({e for p in result["policies"].values() for e in p},
                        key=lambda e: ESTIMATORS.index(e) if e in ESTIMATORS else len(ESTIMATORS))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(policies), 3.6))
    width = 0.8 / max(1, len(estimators))
    for j, est in enumerate(estimators):
        xs, ys, lo, hi = [], [], [], []
        for i, pol in enumerate(policies):
            e = result["policies"][pol].get(est)
            if e is None or not np.isfinite(e["value"]):
                continue
            xs.append(i + (j - (len(estimators) - 1) / 2) * width)
            ys.append(e["value"])
            lo.append(e["value"] - e["lo"] if np.isfinite(e["lo"]) else 0.0)
            hi.append(e["hi"] - e["value"] if np.isfinite(e["hi"]) else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=est)
    logged = result.get("logged_policy", {}).get("value")
    if logged is not None and np.isfinite(logged):
        ax.axhline(logged, color="grey", lw=0.8, ls="--", label="logged policy")
    ax.set_xticks(range(len(policies)), policies)
    ax.set_ylabel("take fraction")
    ax.set_title(f"Estimated take fraction ({int(100 * result.get('config', {}).get('confidence', 0.95))}% CI)")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_breakdown(result: dict[str, Any], column: str) -> str:
    plt = _plt()
    est = _main_estimator(result)
    cells = result["breakdowns"][column]
    values = sorted(cells)
    policies = list(result["policies"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(values) + 2), 3.2))
    width = 0.8 / max(1, len(policies))
    for j, pol in enumerate(policies):
        xs, ys, err_lo, err_hi = [], [], [], []
        for i, v in enumerate(values):
            e = cells[v]["policies"].get(pol, {}).get(est)
            if e is None or not np.isfinite(e["value"]):
                continue
            xs.append(i + (j - (len(policies) - 1) / 2) * width)
            ys.append(e["value"])
            err_lo.append(max(0.0, e["value"] - e["lo"]) if np.isfinite(e["lo"]) else 0.0)
            err_hi.append(max(0.0, e["hi"] - e["value"]) if np.isfinite(e["hi"]) else 0.0)
        ax.errorbar(xs, ys, yerr=[err_lo, err_hi], fmt="o", capsize=2, label=pol)
    ax.set_xticks(range(len(values)), [f"{v}\n(n={cells[v]['n']})" for v in values], fontsize=8)
    ax.set_ylabel(f"take fraction ({est})")
    ax.set_title(f"By {column}")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_profiles(profiles: dict[str, Any]) -> str:
    """Figure-3-like grid: the image chosen for each contrasting member, per title."""
    plt = _plt()
    rows, titles = profiles["profiles"], profiles["titles"]
    fig, ax = plt.subplots(figsize=(1.9 * len(titles) + 1.8, 1.1 * len(rows) + 0.8))
    for r, prof in enumerate(rows):
        for c, pick in enumerate(prof["picks"]):
            colour = TONE_COLOURS.get(pick["tone"], "#cccccc")
            ax.add_patch(plt.Rectangle((c + 0.05, -r - 0.95), 0.9, 0.9, color=colour, alpha=0.85))
            faces = f"{pick['num_faces']} face{'s' if pick['num_faces'] != 1 else ''}"
            ax.text(c + 0.5, -r - 0.5, f"{pick['image_id']}\n{pick['tone']} / {pick['style']}\n{faces}, "
                    f"{pick['expression']}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xlim(0, len(titles))
    ax.set_ylim(-len(rows), 0)
    ax.set_xticks([c + 0.5 for c in range(len(titles))], titles, fontsize=8)
    ax.set_yticks([-r - 0.5 for r in range(len(rows))],
                  [f"{p['taste']} fan\n{p['member_id']}" for p in rows], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(f"Image chosen per member taste (model {profiles.get('model_version', '')})", pad=22)
    for s in ax.spines.values():
        s.set_visible(False)
    return _png(fig)


def _table(result: dict[str, Any]) -> str:
    ests = sorted({e for p in result["policies"].values() for e in p})
    head = "".join(f"<th>{html.escape(e)}</th>" for e in ests)
    body = []
    for pol, est in result["policies"].items():
        cells = []
        for e in ests:
            v = est.get(e)
            cells.append("<td>-</td>" if v is None else
                         f"<td>{v['value']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}]<br><small>ESS {v['ess']:.0f}, "
                         f"n {v['n']}</small></td>")
        body.append(f"<tr><th>{html.escape(pol)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>policy</th>{head}</tr>{''.join(body)}</table>"


def _lifts(result: dict[str, Any]) -> str:
    rows = []
    for name, per in result.get("lifts", {}).items():
        for est, d in per.items():
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{est}</td><td>{d['value']:+.4f}</td>"
                        f"<td>[{d['lo']:+.4f}, {d['hi']:+.4f}]</td></tr>")
    if not rows:
        return ""
    return ("<h2>Lifts (paired bootstrap)</h2><table><tr><th>comparison</th><th>estimator</th>"
            f"<th>lift</th><th>CI</th></tr>{''.join(rows)}</table>")


def _sample(result: dict[str, Any]) -> str:
    """What data the numbers come from, and a banner when they are in-sample."""
    sample = result.get("sample")
    if not isinstance(sample, dict):
        return ""
    rows = [("scored decisions", f"{sample.get('rows')} rows, {sample.get('members')} members, decided "
                                 f"{sample.get('decided_from')} .. {sample.get('decided_until')}"),
            ("split", str(sample.get("rule", ""))),
            ("baselines fitted on", str((sample.get("baselines") or {}).get("fitted_on", "")))]
    for name, w in (sample.get("model_windows") or {}).items():
        rows.append((f"{name} trained on", "no window recorded" if not w else
                     f"{w.get('version')}: {w.get('rows')} rows decided {w.get('decided_from')} .. "
                     f"{w.get('decided_until')}"))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    if sample.get("in_sample"):
        names = ", ".join(sample.get("in_sample_models") or [])
        banner = (f'<p class="insample"><b>IN-SAMPLE:</b> {html.escape(names)} may have been trained on the '
                  f"scored decisions. Every number below is optimistic for them and cannot promote a model.</p>")
    else:
        banner = ('<p class="oos">Out of sample: every scored decision is later than the training window of '
                  "every model evaluated.</p>")
    return f"{banner}<h2>Data</h2><table>{table}</table>"


def _decision(result: dict[str, Any]) -> str:
    """The verdict first: would the promotion gate promote the candidate on these numbers, and why."""
    d = result.get("decision")
    if not isinstance(d, dict):
        return ""
    cand = html.escape(str(d.get("candidate")))
    over = html.escape(str(d.get("current") or "random (no model serves)"))
    if d.get("refused"):
        head, css = f"Do not promote {cand}: the evidence cannot decide", "insample"
    elif d.get("would_promote"):
        done = "promoted" if d.get("promoted") else "would be promoted (run with --promote-if-better)"
        head, css = f"Promote {cand}: {done}", "oos"
    else:
        head, css = f"Keep {over}: {cand} is not shown better", "hold"
    lift = ("" if d.get("refused") else
            f"<p>{html.escape(str(d.get('estimator')))} lift of {cand} over {over}: <b>{d['lift']:+.4f}</b> "
            f"[{d['lo']:+.4f}, {d['hi']:+.4f}]; the gate needs the lower bound above "
            f"{d.get('min_lift', 0.0):+.4f}.</p>")
    return (f'<div class="{css}"><h2 class="decision">Decision: {head}</h2>{lift}'
            f"<p><small>{html.escape(str(d.get('reason', '')))}</small></p></div>")


def render_html(result: dict[str, Any], profiles: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    images = {"policies": plot_policies(result)}
    for col in result.get("breakdowns", {}):
        images[f"by_{col}"] = plot_breakdown(result, col)
    if profiles and profiles.get("profiles"):
        images["profiles"] = plot_profiles(profiles)
    imgs = "".join(f'<h2>{html.escape(k.replace("_", " "))}</h2><img alt="{html.escape(k)}" '
                   f'src="data:image/png;base64,{v}">' for k, v in images.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.get("notes", []))
    meta = {k: result.get(k) for k in ("source", "rows", "uniform_rows", "fit_rows", "dropped", "reward_model",
                                       "in_sample")}
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Keyart offline evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
.insample{{background:#fdd;border:2px solid #c00;padding:8px}}.oos{{background:#efe;padding:8px}}
.hold{{background:#ffd;border:2px solid #aa0;padding:8px}}</style></head><body>
<h1>Offline evaluation: take fraction per policy{" (IN-SAMPLE)" if result.get("in_sample") else ""}</h1>
{_decision(result)}
{_sample(result)}
<pre>{html.escape(json.dumps(meta, indent=1, default=str))}</pre>
{_table(result)}{_lifts(result)}
<ul>{notes}</ul>{imgs}</body></html>"""
    return doc, images


def write_report(result: dict[str, Any], out_dir: Path, profiles: dict[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc, _ = render_html(result, profiles)
    path = out_dir / "evaluation.html"
    path.write_text(doc)
    payload = dict(result)
    if profiles:
        payload["profiles"] = profiles
    (out_dir / "evaluation.json").write_text(json.dumps(payload, indent=1, default=str))
    return path
