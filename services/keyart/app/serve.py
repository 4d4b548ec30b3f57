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
    return Runtime.start_serving(settings, metrics=metrics)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Typed app builder used by the Serve config (`import_path: keyart.app.serve:build_app`)."""
    return bind_app(args, start_runtime)


def run_bare(settings: KeyartSettings, port: int) -> None:
    """Serve the page service on a plain grpc.aio server until interrupted."""
    from keyart.adapters.grpc.auth import TokenAuth
    from keyart.adapters.grpc.server import start_bare_server
    from keyart.adapters.grpc.tls import ServerTls

    auth = TokenAuth.from_file(settings.auth_tokens_file) if settings.auth_tokens_file else None
    tls = ServerTls.from_files(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)

    async def serve_forever() -> None:
        runtime = Runtime.start_serving(settings)
        server, bound = await start_bare_server(runtime.page, f"{settings.listen_host}:{port}", auth, tls)
        scheme = "mutual TLS" if tls and tls.mutual else "TLS" if tls else "plaintext"
        print(f"READY bare grpc.aio keyart.v1.ArtworkRanker on {settings.listen_host}:{bound} ({scheme})",
              flush=True)
        try:
            await server.wait_for_termination()
        finally:
            runtime.close()

    try:
        asyncio.run(serve_forever())
    except KeyboardInterrupt:
        pass
