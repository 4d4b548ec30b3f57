"""One example RankArtwork call, as a UI-tier client would make it.

Usage: python -m keyart.app.example [ADDRESS]   (default 127.0.0.1:9000)
"""

from __future__ import annotations

import sys

import grpc
from google.protobuf.json_format import MessageToJson

from keyart.v1 import ranking_pb2 as pb
from keyart.v1 import ranking_pb2_grpc


def example_request(
    member_id: str = "m00001", title_ids: tuple[str, ...] = ("t0001", "t0002", "t0003")
) -> pb.RankArtworkRequest:
    return pb.RankArtworkRequest(
        request_id="example-1",
        member_id=member_id,
        context=pb.RequestContext(
            country="US", language="en-US", device=pb.DEVICE_TYPE_TV, surface="home/popular"
        ),
        titles=[pb.TitleCandidates(title_id=t) for t in title_ids],
    )


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000"
    with grpc.insecure_channel(address) as channel:
        stub = ranking_pb2_grpc.ArtworkRankerStub(channel)
        try:
            reply = stub.RankArtwork(example_request(), timeout=5)
        except grpc.RpcError as exc:
            print(f"RankArtwork failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            raise SystemExit(1) from None
    print(MessageToJson(reply, indent=2))


if __name__ == "__main__":
    main()
