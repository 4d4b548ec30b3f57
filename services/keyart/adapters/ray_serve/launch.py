"""Start Ray and deploy the Serve config, the way `serve run CONFIG` does.

The Serve config YAML in the package is the single description of the app; this
module only fills in what is local to a run (port, absolute data paths) and
applies the throughput settings measured by `make bench` (see README).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from keyart.adapters.grpc.tls import ServerTls
from keyart.adapters.ports import free_loopback_port
from keyart.adapters.ray_serve.tls_front import TlsFront
from keyart.settings import KeyartSettings

# Measured fastest sound configuration (README, "Performance"): direct ingress via
# the throughput-optimized settings. Set before Ray starts; the environment wins.
THROUGHPUT_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Serve's proxy accepts 2 GiB messages by default; gRPC's own 4 MiB holds the largest
    # valid page (convert.MAX_MESSAGE_BYTES), and larger is RESOURCE_EXHAUSTED.
    "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(4 * 1024 * 1024),
    # A call in flight on a replica that dies is replayed on another one. Serve retries
    # only refused connections, since a replay could run a call twice; both Keyart RPCs
    # are safe to replay (a stable choice returns the same images, outcomes dedup by key).
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
    # A local stop drains first (health NOT_SERVING for settings.drain_s, `drain_then_stop`),
    # so Serve's own 30 s hold of each replica and proxy on shutdown only delays the exit.
    # The RayService does not set these: a rolling update keeps Serve's 30 s drain.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1",
}


_TLS_FRONT: TlsFront | None = None  # this process's TLS-terminating HAProxy, when TLS is set


def serve_config_path() -> Path:
    return Path(str(resources.files("keyart") / "serve_config.yaml"))


def load_serve_config(settings: KeyartSettings, replicas: int | None = None,
                      grpc_port: int | None = None,
                      application: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The packaged Serve config with this run's address, port and absolute data paths.
    ``grpc_port``: where Serve's own ingress listens, when a TLS front takes the public one.
    ``application``: another (import path, args) served with the same ingress and deployment
    options (`make bench`'s transport floor)."""
    config = yaml.safe_load(serve_config_path().read_text())
    config["grpc_options"]["port"] = grpc_port or settings.grpc_port
    config["http_options"]["port"] = settings.http_port
    # Serve's ingress binds the HTTP host for gRPC too; behind a TLS front only loopback.
    config["http_options"]["host"] = "127.0.0.1" if grpc_port else settings.listen_host
    app_config = config["applications"][0]
    overrides = {
        "data_dir": str(settings.data_dir.resolve()),
        "feature_repo_dir": str(settings.feature_repo_dir.resolve()),
    }
    if settings.auth_tokens_file:
        overrides["auth_tokens_file"] = str(Path(settings.auth_tokens_file).resolve())
    app_config["args"]["settings"] = {**app_config["args"].get("settings", {}), **overrides}
    if application is not None:
        app_config["import_path"], app_config["args"] = application
    if replicas is not None:
        deployment = app_config["deployments"][0]
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = replicas
    return config


def wait_application_running(name: str, timeout_s: float) -> None:
    """Block until Serve reports application `name` RUNNING (all its target replicas up)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last = "not deployed"
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        if app is not None:
            last = getattr(app.status, "value", str(app.status))  # a (str, Enum): its value
            if last == "RUNNING":
                return
            if last in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise RuntimeError(f"Serve application {name} is {last}: {app.message}")
        time.sleep(0.5)
    raise TimeoutError(f"Serve application {name} not RUNNING after {timeout_s:.0f} s (last: {last})")


def start_serve(settings: KeyartSettings, replicas: int | None = None, num_cpus: int | None = None,
                application: tuple[str, dict[str, Any]] | None = None) -> str:
    """Start a local Ray instance, deploy Keyart (or ``application``, see `load_serve_config`),
    wait until SERVING; returns the address."""
    for key, value in THROUGHPUT_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    from keyart.adapters.ray_serve.app import wait_serving

    if settings.auth_tokens_file:  # refused here with the file named, not in a replica's crash loop
        from keyart.adapters.grpc.auth import TokenAuth

        TokenAuth.from_file(settings.auth_tokens_file)
    settings.drain_flag.unlink(missing_ok=True)  # left by a stop that was killed mid-drain
    tls = ServerTls.from_files(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    serve_port = free_loopback_port() if tls else None
    config = ServeDeploySchema.model_validate(load_serve_config(settings, replicas, serve_port, application))
    try:
        if not ray.is_initialized():
            ray.init(
                namespace="serve",
                num_cpus=num_cpus,
                include_dashboard=False,
                _metrics_export_port=settings.metrics_port,
                log_to_driver=False,
            )
        client = serve_api.serve_start(
            http_options=config.http_options.model_dump(),
            proxy_location=config.proxy_location,
            grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
        )
        client.deploy_apps(config, _blocking=False)
        address = f"127.0.0.1:{serve_port or settings.grpc_port}"
        wait_serving(address, timeout_s=180.0)  # the first replica answers through the ingress
        # READY means every initial replica serves: the ingress reloads its routes as each
        # one joins, and a replica still starting competes for CPU with the pages.
        wait_application_running(config.applications[0].name, timeout_s=180.0)
        wait_serving(address, timeout_s=60.0)  # and the ingress still routes after its reloads
        if tls:
            global _TLS_FRONT
            _TLS_FRONT = TlsFront(tls, settings.data_dir / "run", settings.listen_host, settings.grpc_port,
                                  serve_port or 0)
    except BaseException:  # a half-started Serve (its HAProxy, its controller) must not outlive the failure:
        with contextlib.suppress(Exception):  # the next start would join it ("Connecting to existing
            stop_serve()                      # Serve app") and fail too; the start's own error is the one to see
        raise
    host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "::", "*") else settings.listen_host
    return f"{host}:{settings.grpc_port}"


def stop_serve() -> None:
    import ray
    from ray import serve

    global _TLS_FRONT
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        _kill_orphaned_haproxy()
        front, _TLS_FRONT = _TLS_FRONT, None
        if front is not None:
            front.stop()


def drain_then_stop(settings: KeyartSettings, say: Callable[[str], None]) -> None:
    """Health NOT_SERVING on every replica for settings.drain_s while pages are still
    answered (load balancers and clients that watch health move away), then stop Serve:
    in-flight calls finish and every replica flushes its decision log."""
    started = time.monotonic()
    try:
        settings.drain_flag.parent.mkdir(parents=True, exist_ok=True)
        settings.drain_flag.write_text(f"{os.getpid()}\n")
        say(f"draining: health NOT_SERVING, still answering for {settings.drain_s:g} s")
        time.sleep(settings.drain_s)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        say("drain cut short")
    finally:
        stop_serve()
        settings.drain_flag.unlink(missing_ok=True)
    say(f"stopped in {time.monotonic() - started:.1f} s")


def _kill_orphaned_haproxy() -> None:
    """HAProxy processes left behind by a stopped Serve (reparented to init) hold the
    ingress ports; the next start could not bind them. Ours are recognised by their
    Serve config directory; live ones (children of a running proxy) are left alone."""
    import psutil

    for proc in psutil.process_iter(["ppid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if proc.info.get("ppid") == 1 and "haproxy" in cmdline and "/haproxy-serve/" in cmdline:
            try:
                proc.kill()
            except psutil.Error:
                pass


def launch(settings: KeyartSettings, say: Callable[[str], None], block: bool = True) -> None:
    """`make run`: serve until interrupted (SIGINT or SIGTERM), after one ready line with an example call.

    block=False returns once serving; the server then lives only as long as this process
    (the local Ray instance belongs to its driver): `keyart up --detach` runs a blocking
    `keyart up` in a process of its own instead.
    """
    if block:
        def _interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # `kill`, `keyart down` and Kubernetes stop cleanly too; SIGINT is restored in case
        # this process was started with it ignored (a background job of a script).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    serving = False
    try:
        address = start_serve(settings)
        serving = True
        say(
            f"READY keyart.v1.ArtworkRanker on {address} (Ray Serve gRPC, metrics on "
            f":{settings.metrics_port}/metrics, {time.monotonic() - started:.0f} s). Try: .venv/bin/keyart demo   "
            f"or   .venv/bin/python -m keyart.app.example {address}"
        )
        if not block:
            return
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if not block:
            raise
        if serving:
            drain_then_stop(settings, say)
        else:
            say("stopping")
            stop_serve()
    except BaseException:
        if block:
            stop_serve()
        raise
