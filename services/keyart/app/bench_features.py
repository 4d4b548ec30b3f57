"""`keyart bench-features`: latency of the per-request feature step, in process.

What one RankArtwork page costs before the model runs (services/keyart/core/page.py
and core/ranker.py): one member lookup in the Feast online store
(``MemberFeatureSource.get``, a single batched read of the member_context_v3
feature service), resolving the page's candidates to rows of the in-process
``CatalogIndex``, and ``build_matrix`` for every candidate of the page. Pages are
40 titles x 12 candidates (480 rows) for random members of the world, with random
devices; titles with fewer than 12 images offer their whole pool.

Not included: the gRPC/Ray Serve hop, request parsing, the model, the policy draw,
the decision log and the page service's thread hop to the feature pool (see `keyart bench`
for end-to-end figures). Target: p99 <= 3 ms on the embedded (SQLite) online store.

Mount with ``app.command("bench-features")(bench_features_command)``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from keyart.app.cli.support import friendly as _friendly
from keyart.errors import KeyartError
from keyart.settings import KeyartSettings

TITLES_PER_PAGE = 40
CANDIDATES_PER_TITLE = 12
TARGET_P99_MS = 3.0
_DEVICES = ("TV", "WEB", "MOBILE", "TABLET")


def _pct(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if len(values) else float("nan")


def bench_features(
    settings: KeyartSettings, pages: int = 500, seed: int = 5, warmup: int = 20
) -> dict[str, Any]:
    """Time the feature step of ``pages`` pages; p50/p99 in milliseconds.

    Raises KeyartError when the world or the feature store is not built.
    """
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.feast.online import MemberFeatureSource
    from keyart.adapters.feast.repo import open_store, resolve_feature_repo
    from keyart.core.featurize import CatalogIndex, build_matrix, cold_member
    from keyart.domain import RequestContext

    if pages < 1:
        raise KeyartError("bench-features: --pages must be at least 1")
    world = settings.world_dir
    if not (world / "titles.parquet").is_file() or not (world / "member_profile.parquet").is_file():
        raise KeyartError(
            f"bench-features: no world with feature tables in {world}; run `keyart world build` "
            "(or `keyart world import`) and `keyart features apply` first"
        )
    index = CatalogIndex.build(load_catalog(world))
    repo = resolve_feature_repo(settings)
    try:
        source = MemberFeatureSource(open_store(repo))
    except Exception as exc:  # registry missing, service not applied  # noqa: BLE001 - reported as one line
        raise KeyartError(
            f"bench-features: feature store in {repo} not ready ({type(exc).__name__}: {exc}); "
            "run `keyart features apply`"
        ) from None

    import pandas as pd

    profiles = pd.read_parquet(world / "member_profile.parquet", columns=["member_id", "country", "language"])
    profiles = profiles.drop_duplicates("member_id", keep="last").reset_index(drop=True)
    if profiles.empty:
        raise KeyartError(f"bench-features: no members in {world / 'member_profile.parquet'}")
    pools = {t: index.catalog.pool(t) for t in index.catalog.titles}
    titles = sorted(index.catalog.titles.values(), key=lambda t: (-min(len(pools[t.title_id]), 12), t.title_id))
    titles = [t for t in titles if pools[t.title_id]]
    if not titles:
        raise KeyartError("bench-features: the catalog has no title with images")
    pool = [t for t in titles if len(pools[t.title_id]) >= CANDIDATES_PER_TITLE] or titles
    if len(pool) < TITLES_PER_PAGE:
        pool = titles  # small catalogs: fill the page with smaller pools
    per_page = min(TITLES_PER_PAGE, len(pool))

    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    total = pages + warmup
    plan = []
    for _ in range(total):
        m = profiles.iloc[int(rng.integers(len(profiles)))]
        page = rng.choice(len(pool), size=per_page, replace=False)
        ctx = RequestContext(
            country=str(m["country"]), language=str(m["language"]),
            device=_DEVICES[int(rng.integers(len(_DEVICES)))], surface="bench", client_time=now,
        )
        plan.append((str(m["member_id"]), ctx, [pool[i] for i in page]))

    lookup_ms = np.empty(total)
    step_ms = np.empty(total)
    rows_per_page = np.empty(total)
    unknown = 0
    image_row = index.image_row
    gc.collect()
    for k, (member_id, ctx, page_titles) in enumerate(plan):
        t0 = time.perf_counter()
        member = source.get(member_id)
        t1 = time.perf_counter()
        if member is None:
            unknown += 1
            member = cold_member(member_id, ctx)
        candidates = [pools[t.title_id][:CANDIDATES_PER_TITLE] for t in page_titles]
        sizes = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=len(candidates))
        rows = np.fromiter((image_row[i] for c in candidates for i in c), dtype=np.int64,
                           count=int(sizes.sum()))
        title_of_row = np.repeat(np.arange(len(candidates)), sizes)
        x = build_matrix(index, member, ctx, [t.title_id for t in page_titles], rows, title_of_row)
        t2 = time.perf_counter()
        lookup_ms[k] = (t1 - t0) * 1000.0
        step_ms[k] = (t2 - t0) * 1000.0
        rows_per_page[k] = x.shape[0]
    lookup, step, matrix = lookup_ms[warmup:], step_ms[warmup:], (step_ms - lookup_ms)[warmup:]
    p99 = _pct(step, 99)
    return {
        "pages": pages,
        "titles_per_page": per_page,
        "candidates_per_title": CANDIDATES_PER_TITLE,
        "rows_per_page": round(float(rows_per_page[warmup:].mean()), 1),
        "p50_ms": _pct(step, 50),
        "p99_ms": p99,
        "mean_ms": round(float(step.mean()), 3),
        "max_ms": round(float(step.max()), 3),
        "lookup_p50_ms": _pct(lookup, 50),
        "lookup_p99_ms": _pct(lookup, 99),
        "matrix_p50_ms": _pct(matrix, 50),
        "matrix_p99_ms": _pct(matrix, 99),
        "unknown_members": unknown,
        "target_p99_ms": TARGET_P99_MS,
        "within_target": bool(p99 <= TARGET_P99_MS),
        "online_store": _online_store_type(repo),
        "feature_repo": str(repo),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _online_store_type(repo: Path) -> str:
    try:
        import yaml

        cfg = yaml.safe_load((Path(repo) / "feature_store.yaml").read_text()) or {}
        online = cfg.get("online_store", {})
        return str(online.get("type", "sqlite")) if isinstance(online, dict) else str(online)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"




@_friendly
def bench_features_command(
    pages: Annotated[int, typer.Option("--pages", min=1, help="Pages to time (after 20 warm-up pages).")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Latency of the per-request feature step (member lookup + feature matrix), p50/p99."""
    try:
        settings = KeyartSettings()
    except Exception as exc:  # noqa: BLE001 - pydantic names the variable
        raise KeyartError(f"invalid KEYART_* setting: {' '.join(str(exc).split())}") from None
    result = bench_features(settings, pages=pages)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    verdict = "within" if result["within_target"] else "OVER"
    typer.echo(
        f"feature step, {result['pages']} pages of {result['titles_per_page']}x"
        f"{result['candidates_per_title']}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms "
        f"({verdict} the {result['target_p99_ms']} ms target; lookup p99 {result['lookup_p99_ms']:.3f} ms, "
        f"matrix p99 {result['matrix_p99_ms']:.3f} ms)"
    )


bench_app = typer.Typer(help="Feature-step benchmark.", add_completion=False)
bench_app.command("bench-features")(bench_features_command)

__all__ = ["bench_app", "bench_features", "bench_features_command"]
