"""`keyart demo`: contrasting members, the same page, different artwork, and why.

Calls the running RankArtwork service for members whose tastes differ most
(a comedy fan, a romance fan, an action fan, a horror fan), then explains each
choice with the model's SHAP contributions for the chosen image.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from keyart.jobs.world.vocab import GENRES
from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc

DEMO_GENRES: tuple[str, ...] = ("comedy", "romance", "action", "horror")
PAGE_SIZE = 6


def _contrasting_members(settings: KeyartSettings) -> list[tuple[str, str]]:
    """(genre, member_id) of the member with the strongest taste for each demo genre."""
    from keyart.jobs.world.world_model import load_world

    members = load_world(settings.world_dir).members
    taste = np.vstack(members["latent_genre_weights"].to_numpy())
    share = taste / taste.sum(axis=1, keepdims=True)
    picks = []
    for genre in DEMO_GENRES:
        best = int(np.argmax(share[:, GENRES.index(genre)]))
        picks.append((genre, str(members.iloc[best]["member_id"])))
    return picks


def _demo_titles(catalog: Any) -> list[str]:
    """Titles with the most varied pools (most distinct tones), where choice matters most."""
    def variety(t: Any) -> tuple[int, int]:
        pool = catalog.pool(t.title_id)
        return (len({catalog.images[i].tone for i in pool}), len(pool))

    ranked = sorted(catalog.titles.values(), key=lambda t: (variety(t), t.title_id), reverse=True)
    return [t.title_id for t in ranked[:PAGE_SIZE]]


def run_demo(settings: KeyartSettings, address: str) -> dict[str, Any]:
    from keyart.adapters.catalog.parquet import load_catalog
    from keyart.adapters.feast.online import MemberFeatureSource
    from keyart.adapters.feast.repo import open_store, resolve_feature_repo
    from keyart.core.featurize import CatalogIndex, build_matrix, cold_member
    from keyart.core.model import current_version, load_model
    from keyart.domain import RequestContext

    catalog = load_catalog(settings.world_dir)
    version = current_version(settings.models_dir)
    model = load_model(settings.models_dir / version) if version else None
    index = CatalogIndex.build(catalog, model.space if model else None)  # the model's columns
    features = MemberFeatureSource(open_store(resolve_feature_repo(settings)))
    titles = _demo_titles(catalog)
    result: dict[str, Any] = {"address": address, "titles": titles, "members": []}
    with grpc.insecure_channel(address) as channel:
        stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
        for genre, member_id in _contrasting_members(settings):
            request = pb.RankArtworkRequest(
                request_id=f"demo-{member_id}",
                member_id=member_id,
                context=pb.RequestContext(country="US", language="en-US", device=pb.DEVICE_TYPE_TV, surface="demo"),
                titles=[pb.TitleCandidates(title_id=t) for t in titles],
            )
            reply = stub.RankArtwork(request, timeout=10)
            member = features.get(member_id)
            ctx = RequestContext("US", "en-US", "TV", "demo", request_time())
            member = member or cold_member(member_id, ctx)
            top_genres = sorted(member.genre_affinity.items(), key=lambda kv: -kv[1])[:2]
            rows = []
            for s in reply.selections:
                image = catalog.images.get(s.image_id)
                why: list[tuple[str, float]] = []
                if model is not None and image is not None and not s.fallback_reason:
                    x = build_matrix(index, member, ctx, [s.title_id],
                                     np.array([index.image_row[s.image_id]]), np.array([0]))
                    contrib = model.contributions(x)[0, :-1]
                    order = np.argsort(-contrib)[:3]
                    why = [(index.space.names[j], round(float(contrib[j]), 3)) for j in order if contrib[j] > 0]
                rows.append({
                    "title_id": s.title_id,
                    "image_id": s.image_id,
                    "tone": image.tone if image else "",
                    "faces": image.num_faces if image else 0,
                    "expression": image.expression if image else "",
                    "cast_shown": list(image.cast_shown) if image else [],
                    "score": round(s.score, 4),
                    "propensity": round(s.propensity, 3),
                    "explored": s.explored,
                    "fallback_reason": s.fallback_reason,
                    "why": why,
                })
            result["members"].append({
                "member_id": member_id,
                "taste": genre,
                "top_genres": [(g, round(v, 2)) for g, v in top_genres],
                "policy": reply.policy,
                "model_version": reply.model_version,
                "selections": rows,
            })
    return result


def request_time():  # -> datetime
    from datetime import datetime

    return datetime.now(UTC)


def render_demo(result: dict[str, Any], console: Console) -> None:
    members = result["members"]
    table = Table(title=f"Keyart demo: same page, {len(members)} members ({result['address']})", show_lines=True)
    table.add_column("title")
    for m in members:
        genres = ", ".join(g for g, _ in m["top_genres"])
        table.add_column(f"{m['member_id']}\n{m['taste']} fan\n(history: {genres})")
    for k, title_id in enumerate(result["titles"]):
        cells = []
        for m in members:
            s = m["selections"][k]
            if s["fallback_reason"]:
                cells.append(f"{s['image_id']}\n[yellow]default: {s['fallback_reason']}[/yellow]")
                continue
            face = f"{s['faces']} face {s['expression']}" if s["faces"] else "no face"
            why = "\n".join(f"+{v:.2f} {name}" for name, v in s["why"][:2])
            flag = " [magenta]explore[/magenta]" if s["explored"] else ""
            cells.append(f"[bold]{s['image_id']}[/bold]{flag}\n{s['tone']}, {face}\n"
                         f"p={s['score']:.3f} π={s['propensity']:.3f}\n[dim]{why}[/dim]")
        table.add_row(title_id, *cells)
    console.print(table)
    console.print(f"model {members[0]['model_version'] if members else ''}. p = predicted quality-play "
                  "probability, π = propensity; the +lines are the top SHAP contributions (logit) of the "
                  "chosen image's features.")
