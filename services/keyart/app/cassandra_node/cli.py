"""The command line: ``python -m keyart.app.cassandra_node start|stop|status|env``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from keyart.app.cassandra_node.common import (
    CASSANDRA_VERSION,
    CassandraNodeError,
    MissingToolError,
    NodeInfo,
    default_cache_dir,
    default_home,
)
from keyart.app.cassandra_node.jars import _require_mvn, find_java
from keyart.app.cassandra_node.process import _rss_mb, node_config, node_status, start_node, stop_node

_DESCRIPTION = "A real single-node Apache Cassandra on loopback, for development and tests."


def _env_lines(info: NodeInfo) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in info.env().items()]


def _cmd_start(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    cache = Path(args.cache_dir) if args.cache_dir else None
    t0 = time.monotonic()
    find_java()  # fail fast, before any message, when a tool is missing
    lib = (cache or default_cache_dir()) / args.version / "lib"
    if not (lib / f"cassandra-all-{args.version}.jar").is_file():
        _require_mvn()
        print(f"fetching cassandra-all {args.version} and its dependencies with Maven into {lib} ...", flush=True)
    info = start_node(
        home,
        auth=args.auth,
        tls=args.tls,
        heap=args.heap,
        version=args.version,
        native_port=args.port,
        storage_port=args.storage_port,
        timeout=args.timeout,
        cache_dir=cache,
        maven_repo=Path(args.maven_repo) if args.maven_repo else None,
    )
    total = time.monotonic() - t0
    if info.started:
        print(
            f"Cassandra {info.version} up on {info.host}:{info.port} (pid {info.pid}): "
            f"CQL answered {info.ready_seconds:.1f} s after launch, {total:.1f} s in all"
        )
    else:
        print(f"Cassandra {info.version} already running on {info.host}:{info.port} (pid {info.pid})")
    print(f"home {info.home}, log {info.log_file}")
    if info.auth:
        print(f"auth: PasswordAuthenticator, superuser {info.username}/{info.password}")
    if info.tls:
        print(f"tls: client encryption required; CA {info.ca_file}")
    print("Point Keyart at it with:")
    print("  " + " ".join(f"{k}={shlex.quote(v)}" for k, v in info.env().items()))
    print(f'(or: eval "$(python -m keyart.app.cassandra_node env{" --home " + args.home if args.home else ""})")')
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    pid = node_status(home)
    if stop_node(home, timeout=args.timeout):
        print(f"stopped Cassandra (pid {pid.pid if pid else '?'})")
    else:
        print("no Cassandra running for this home")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    info = node_status(home)
    if info is None:
        print(f"stopped ({(home or default_home()).resolve()})")
        return 3
    rss = _rss_mb(info.pid)
    rss_txt = f", RSS {rss:.0f} MiB" if rss is not None else ""
    print(
        f"running: Cassandra {info.version} on {info.host}:{info.port} (storage {info.storage_port}), "
        f"pid {info.pid}{rss_txt}, auth={'on' if info.auth else 'off'}, tls={'on' if info.tls else 'off'}"
    )
    print(f"home {info.home}")
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    info = node_config(home)
    if info is None:
        print("no node in this home yet: run `python -m keyart.app.cassandra_node start`", file=sys.stderr)
        return 3
    if info.pid == 0:
        print("# warning: the node is not running", file=sys.stderr)
    print("\n".join(_env_lines(info)))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keyart.app.cassandra_node", description=_DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="node directory (default: var/cassandra of the checkout)")
    s = sub.add_parser("start", parents=[common], help="start the node in the background and wait for CQL")
    s.add_argument("--auth", action="store_true", help="PasswordAuthenticator, superuser cassandra/cassandra")
    s.add_argument("--tls", action="store_true", help="client TLS with a generated test CA")
    s.add_argument("--heap", default="1g", help="max heap (default 1g; initial 512m)")
    s.add_argument("--version", default=CASSANDRA_VERSION, help=f"cassandra-all version (default {CASSANDRA_VERSION})")
    s.add_argument("--port", type=int, help="native transport port (default: free port, then kept)")
    s.add_argument("--storage-port", type=int, help="storage port (default: free port, then kept)")
    s.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for CQL (default 180)")
    s.add_argument("--cache-dir", help="jar cache (default .cache/cassandra of the checkout)")
    s.add_argument("--maven-repo", help="Maven local repository (default ~/.m2/repository)")
    s.set_defaults(func=_cmd_start)
    t = sub.add_parser("stop", parents=[common], help="stop the node started in this home")
    t.add_argument("--timeout", type=float, default=60.0, help="seconds before SIGKILL (default 60)")
    t.set_defaults(func=_cmd_stop)
    sub.add_parser("status", parents=[common], help="running or not (exit 3 when stopped)").set_defaults(
        func=_cmd_status
    )
    sub.add_parser("env", parents=[common], help="print export lines of the KEYART_* settings").set_defaults(
        func=_cmd_env
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args))
    except MissingToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CassandraNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
