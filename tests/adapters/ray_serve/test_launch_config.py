"""The Serve config `keyart up` deploys: its listening address and, behind the TLS front,
a loopback port of its own (no Ray started here)."""

from __future__ import annotations

from keyart.adapters.grpc.tls import ServerTls
from keyart.adapters.ray_serve.launch import THROUGHPUT_ENV, load_serve_config
from keyart.adapters.ray_serve.tls_front import render_config
from keyart.settings import KeyartSettings


def test_serve_binds_the_listen_host_and_loopback_behind_a_tls_front(tmp_path) -> None:
    settings = KeyartSettings(data_dir=tmp_path, grpc_port=9123)
    plain = load_serve_config(settings)
    assert plain["http_options"]["host"] == "127.0.0.1" and plain["grpc_options"]["port"] == 9123
    everyone = load_serve_config(settings.model_copy(update={"listen_host": "0.0.0.0"}))
    assert everyone["http_options"]["host"] == "0.0.0.0"
    fronted = load_serve_config(settings.model_copy(update={"listen_host": "0.0.0.0"}), grpc_port=40123)
    assert fronted["http_options"]["host"] == "127.0.0.1" and fronted["grpc_options"]["port"] == 40123
    assert "empty-response" in THROUGHPUT_ENV["RAY_SERVE_HAPROXY_RETRY_ON"]


def test_the_tls_front_verifies_clients_only_with_a_client_ca(tmp_path) -> None:
    tls = ServerTls(tmp_path / "s.crt", tmp_path / "s.key")
    one_way = render_config(tls, tmp_path / "front.pem", "0.0.0.0", 9000, 40123)
    assert "bind 0.0.0.0:9000 ssl crt" in one_way and "verify required" not in one_way
    assert "server serve 127.0.0.1:40123 proto h2" in one_way
    mutual = render_config(ServerTls(tls.cert_file, tls.key_file, tmp_path / "ca.crt"), tmp_path / "front.pem",
                           "127.0.0.1", 9000, 40123)
    assert f"ca-file {tmp_path / 'ca.crt'} verify required" in mutual


def test_ready_waits_for_the_application_running_and_names_a_failed_deploy(monkeypatch) -> None:
    """`keyart up` says READY only once Serve reports every initial replica up (no Ray started:
    Serve's status API is replayed)."""
    import pytest
    from ray import serve
    from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, ServeStatus

    from keyart.adapters.ray_serve import launch

    def replay(*states: ApplicationStatus, message: str = "") -> None:
        answers = iter(states)

        def status() -> ServeStatus:
            state = next(answers, states[-1])
            return ServeStatus(applications={"keyart": ApplicationStatusOverview(
                status=state, message=message, last_deployed_time_s=0.0, deployments={})})

        monkeypatch.setattr(serve, "status", status)

    monkeypatch.setattr(launch.time, "sleep", lambda s: None)
    replay(ApplicationStatus.DEPLOYING, ApplicationStatus.DEPLOYING, ApplicationStatus.RUNNING)
    launch.wait_application_running("keyart", timeout_s=5.0)
    replay(ApplicationStatus.DEPLOYING, ApplicationStatus.DEPLOY_FAILED, message="replica constructor raised")
    with pytest.raises(RuntimeError, match="keyart is DEPLOY_FAILED: replica constructor raised"):
        launch.wait_application_running("keyart", timeout_s=5.0)
    replay(ApplicationStatus.DEPLOYING)
    with pytest.raises(TimeoutError, match="not RUNNING after 0 s .last: DEPLOYING"):
        launch.wait_application_running("keyart", timeout_s=0.2)
