"""Composition roots of the two servers: the Ray Serve app and the bare grpc.aio server.

The Serve config names `keyart.app.serve:build_app`; it binds the Ray deployment to
`start_runtime`, which wires the page service to its adapters in each replica.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from keyart.adapters.ray_serve.app import bind_app
from keyart.app.runtime import Runtime
from keyart.core.ports import PageMetrics
from keyart.settings import KeyartSettings


def start_runtime(settings: KeyartSettings, metrics: PageMetrics) -> Runtime:
    """A replica's runtime: catalog, Feast, model watcher, decision log."""
    return Runtime.start(settings, metrics=metrics)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Typed app builder used by the Serve config (`import_path: keyart.app.serve:build_app`)."""
    return bind_app(args, start_runtime)


def run_bare(settings: KeyartSettings, port: int) -> None:
    """Serve the page service on a plain grpc.aio server until interrupted."""
    from keyart.adapters.grpc.server import start_bare_server

    async def serve_forever() -> None:
        runtime = Runtime.start(settings)
        server, bound = await start_bare_server(runtime.page, f"0.0.0.0:{port}")
        print(f"READY bare grpc.aio keyart.v1.ArtworkRanker on 127.0.0.1:{bound}", flush=True)
        try:
            await server.wait_for_termination()
        finally:
            runtime.close()

    try:
        asyncio.run(serve_forever())
    except KeyboardInterrupt:
        pass
