"""TLS and mutual TLS on the bare grpc.aio server: the right client is served; a
plaintext client, a client without a certificate and one from another CA are refused."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from tiny import make_member
from tls_certs import health_status, make_pki

from keyart.adapters.grpc.server import start_bare_server
from keyart.adapters.grpc.tls import ServerTls
from keyart.core.page import PageService
from keyart.core.ranker import PolicyConfig
from keyart.errors import TlsConfigError
from keyart.settings import KeyartSettings


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tiny_page_service(tiny_index, tiny_model):
    class Members:
        def get(self, member_id):
            return make_member(member_id)

    service = PageService(tiny_index, Members(), PolicyConfig())
    service.set_model(tiny_model)
    return service


def _serve(service, tls: ServerTls):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, port = asyncio.run_coroutine_threadsafe(start_bare_server(service, "127.0.0.1:0", tls=tls), loop).result(30)
    return loop, server, port


def _secure(port: int, ca: bytes, cert: bytes | None = None, key: bytes | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls_serves_the_right_client_and_refuses_the_others(pki, tiny_page_service, mutual) -> None:
    tls = ServerTls.from_files(pki.server_cert, pki.server_key, pki.ca if mutual else None)
    loop, server, port = _serve(tiny_page_service, tls)
    ca, cert, key = pki.read(pki.ca, pki.client_cert, pki.client_key)
    stranger_cert, stranger_key = pki.read(pki.stranger_cert, pki.stranger_key)
    try:
        with _secure(port, ca, cert, key) as channel:
            assert health_status(channel) == "SERVING"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert health_status(channel) == "UNAVAILABLE"  # plaintext never reaches the service
        with _secure(port, ca) as channel:  # no client certificate
            assert health_status(channel) == ("UNAVAILABLE" if mutual else "SERVING")
        with _secure(port, ca, stranger_cert, stranger_key) as channel:
            assert health_status(channel) == ("UNAVAILABLE" if mutual else "SERVING")
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_a_bad_tls_file_is_refused_with_its_name(pki, tmp_path) -> None:
    not_pem = tmp_path / "server.key"
    not_pem.write_text("hello")
    with pytest.raises(TlsConfigError, match=r"TLS key .*server.key: not a PEM file"):
        ServerTls.from_files(pki.server_cert, not_pem, None)
    with pytest.raises(TlsConfigError, match=r"TLS client CA .*missing.crt: cannot be read"):
        ServerTls.from_files(pki.server_cert, pki.server_key, tmp_path / "missing.crt")


def test_settings_want_certificate_and_key_together(pki, tmp_path) -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file are set together"):
        KeyartSettings(data_dir=tmp_path, tls_cert_file=pki.server_cert)
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        KeyartSettings(data_dir=tmp_path, tls_client_ca_file=pki.ca)
    assert KeyartSettings(data_dir=tmp_path).listen_host == "127.0.0.1"
