"""A Runtime's page service behind the bare grpc.aio server, in this process (integration tests)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

import grpc

from keyart.settings import KeyartSettings
from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc


class BareServer:
    """The page service of a Runtime behind a grpc.aio server on its own event-loop thread."""

    def __init__(self, settings: KeyartSettings) -> None:
        from keyart.adapters.grpc.server import start_bare_server
        from keyart.app.runtime import Runtime

        self.runtime = Runtime.start(settings, watch_interval_s=0.5)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bare-grpc", daemon=True)
        self.thread.start()
        start = start_bare_server(self.runtime.page, "127.0.0.1:0")
        self.server, port = asyncio.run_coroutine_threadsafe(start, self.loop).result(30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = ranking_pb2_grpc.ArtworkRankerStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.runtime.close()


def page(member: str, titles: list[str], when: datetime, device: int = pb.DEVICE_TYPE_TV) -> pb.RankArtworkRequest:
    request = pb.RankArtworkRequest(
        request_id=f"{member}-{when.timestamp():.0f}", member_id=member,
        context=pb.RequestContext(country="GB", language="en", device=device, surface="home"),
        titles=[pb.TitleCandidates(title_id=t) for t in titles],
    )
    request.context.client_time.FromDatetime(when)
    return request
