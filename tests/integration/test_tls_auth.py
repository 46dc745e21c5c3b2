"""TLS, mutual TLS and bearer tokens on a real `helium-trt serve` process on 127.0.0.1 (tiny
model), with a certificate authority made for the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc

from auth_helpers import TOKEN_A, TOKEN_B, bearer, one_call_request, write_tokens
from serve_helpers import serve
from tls_helpers import make_pki

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tiny_model_dir, pki, tmp_path_factory):
    """TLS and bearer tokens (tenant a only, at first)."""
    workdir = tmp_path_factory.mktemp("tls_serve")
    tokens = write_tokens(workdir / "tokens.yaml", {"a": {"tokens": [TOKEN_A]}})
    with serve(tiny_model_dir, workdir, "--kv-cache-blocks", "64", "--tls-cert", str(pki.server_cert),
               "--tls-key", str(pki.server_key), "--auth-tokens", str(tokens)) as served:
        yield served, tokens


def _tls_channel(address: str, pki, with_client_cert: bool = False) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca_cert"),
        private_key=pki.read("client_key") if with_client_cert else None,
        certificate_chain=pki.read("client_cert") if with_client_cert else None)
    return grpc.secure_channel(address, creds)


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


def test_tls_with_a_token_runs_a_workflow(tls_server, pki):
    served, _ = tls_server
    with _tls_channel(served.address, pki) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        events = list(stub.Run(one_call_request("Be brief.", "Hi"), metadata=bearer(TOKEN_A),
                               timeout=60))
        assert events[-1].WhichOneof("event") == "run_stats"
        assert events[-1].run_stats.num_llm_calls == 1
        assert stub.Stats(service_pb2.StatsRequest(), metadata=bearer(TOKEN_A)).num_runs >= 1


def test_a_call_without_a_valid_token_is_unauthenticated(tls_server, pki):
    served, _ = tls_server
    with _tls_channel(served.address, pki) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        code, details = _code(lambda: stub.Stats(service_pb2.StatsRequest(), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in details
        code, _ = _code(lambda: list(stub.Run(one_call_request("Be brief.", "Hi"), timeout=10)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, details = _code(lambda: stub.Stats(service_pb2.StatsRequest(), timeout=10,
                                                 metadata=bearer("not-a-token-of-this-server")))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in details
        code, _ = _code(lambda: stub.Stats(service_pb2.StatsRequest(), timeout=10,
                                           metadata=(("authorization", TOKEN_A),)))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # a token needs the Bearer scheme
    assert "refused /helium.v1.HeliumService/Stats: UNAUTHENTICATED" in served.log()


def test_health_and_reflection_need_no_token(tls_server, pki):
    served, _ = tls_server
    with _tls_channel(served.address, pki) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
        assert "helium.v1.HeliumService" in names


def test_a_plaintext_connection_to_the_tls_port_is_refused(tls_server):
    served, _ = tls_server
    with grpc.insecure_channel(served.address) as channel:
        code, _ = _code(lambda: service_pb2_grpc.HeliumServiceStub(channel).Stats(
            service_pb2.StatsRequest(), metadata=bearer(TOKEN_A), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_tokens_are_read_again_on_sighup(tls_server, pki):
    served, tokens = tls_server
    with _tls_channel(served.address, pki) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)

        def accepted(token: str) -> bool:
            try:
                stub.Stats(service_pb2.StatsRequest(), metadata=bearer(token), timeout=5)
                return True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                return False

        assert not accepted(TOKEN_B)
        write_tokens(tokens, {"b": {"tokens": [TOKEN_B]}})
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not accepted(TOKEN_B):
            assert time.monotonic() < deadline, "tokens not reloaded after SIGHUP"
            time.sleep(0.1)
        assert not accepted(TOKEN_A)  # removed from the file: refused from now on
        tokens.write_text("tenants: [this is not a mapping")
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth tokens not reloaded" not in served.log():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert accepted(TOKEN_B)  # a broken file keeps the tokens in force
        write_tokens(tokens, {"a": {"tokens": [TOKEN_A]}})
        served.process.send_signal(signal.SIGHUP)


def test_mutual_tls_needs_a_client_certificate(tiny_model_dir, pki, tmp_path):
    with serve(tiny_model_dir, tmp_path, "--kv-cache-blocks", "64", "--tls-cert",
               str(pki.server_cert), "--tls-key", str(pki.server_key),
               "--tls-client-ca", str(pki.ca_cert)) as served:
        with _tls_channel(served.address, pki, with_client_cert=True) as channel:
            stats = service_pb2_grpc.HeliumServiceStub(channel).Stats(service_pb2.StatsRequest(),
                                                                      timeout=10)
            assert stats.num_runs == 0
        with _tls_channel(served.address, pki) as channel:
            code, _ = _code(lambda: service_pb2_grpc.HeliumServiceStub(channel).Stats(
                service_pb2.StatsRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE
        assert "mutual TLS" in served.log()


@pytest.mark.parametrize("flags, message", [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
    (["--auth-tokens", "missing.yaml"], "auth tokens file"),
])
def test_bad_security_flags_stop_serve_with_status_2(tmp_path, flags, message):
    proc = subprocess.run(
        [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
         *flags], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HELIUM_MODEL_DIR": str(tmp_path)})
    assert proc.returncode == 2 and message in proc.stderr
