"""`helium-trt run --server` against a real `helium-trt serve` on 127.0.0.1 with mutual TLS and
bearer tokens (a CA made for the test), and the public workflows read again on SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import yaml
from google.protobuf import json_format

from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc

from auth_helpers import TOKEN_A, TOKEN_B, bearer, finished, one_call_request, write_tokens
from serve_helpers import serve
from tls_helpers import make_pki

pytest.importorskip("cryptography")

TOKEN_C = "token-of-tenant-c-0192837465"
TOKEN_D = "token-of-tenant-d-5647382910"
FIRST = "You are the front desk of the Example hotel; answer kindly in one line. " * 2
SECOND = "You are the parts counter of the Example garage; answer tersely, one line. " * 2
NO_RESULT_CACHE = {"optimizations": service_pb2.Optimizations(disable_prompt_cache=True)}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """Mutual TLS, tokens for tenants a-d, FIRST's workflow public."""
    workdir = tmp_path_factory.mktemp("run_server_security")
    pki = make_pki(workdir)
    tokens = write_tokens(workdir / "tokens.yaml", {
        name: {"tokens": [token]} for name, token in
        (("a", TOKEN_A), ("b", TOKEN_B), ("c", TOKEN_C), ("d", TOKEN_D))})
    public = workdir / "public.yaml"
    _write_workflow(public, FIRST, "desk")
    (workdir / "token").write_text(TOKEN_A + "\n")
    with serve(tiny_model_dir, workdir, "--kv-cache-blocks", "256", "--tls-cert",
               str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca",
               str(pki.ca_cert), "--auth-tokens", str(tokens), "--public-workflow",
               str(public)) as served:
        yield served, pki, workdir


def _write_workflow(path, system: str, name: str) -> None:
    workflow = one_call_request(system, "x", name=name).workflow
    path.write_text(yaml.safe_dump({"workflow": json_format.MessageToDict(workflow)}))


def _helium_run(served, workdir, *flags: str, env_token: str | None = None,
                server: str | None = None):
    request = workdir / "ask.json"
    request.write_text(json_format.MessageToJson(
        one_call_request("Be brief.", "Which floor is the gym on?")))
    env = {k: v for k, v in os.environ.items() if k != "HELIUM_TOKEN"}
    if env_token is not None:
        env["HELIUM_TOKEN"] = env_token
    return subprocess.run(
        [sys.executable, "-m", "helium_trt", "run", str(request), "--quiet", "--server",
         server or served.address, *flags], capture_output=True, text=True, timeout=120,
        env=env)


def _tls_flags(pki, client_cert: bool = True) -> list[str]:
    flags = ["--tls-ca", str(pki.ca_cert)]
    return flags + ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)] \
        if client_cert else flags


def test_run_server_over_mutual_tls_with_a_token_file(server):
    served, pki, workdir = server
    done = _helium_run(served, workdir, *_tls_flags(pki), "--token-file", str(workdir / "token"))
    assert done.returncode == 0, done.stderr
    assert "row 0:" in done.stdout and "num_llm_calls: 1" in done.stdout


def test_run_server_takes_the_token_from_helium_token(server):
    served, pki, workdir = server
    done = _helium_run(served, workdir, *_tls_flags(pki), env_token=TOKEN_B)
    assert done.returncode == 0, done.stderr
    assert "run tenant=b " in served.log()  # the server knew the caller by its token


def test_run_server_without_a_token_or_a_client_certificate_is_refused(server):
    served, pki, workdir = server
    done = _helium_run(served, workdir, *_tls_flags(pki))
    assert done.returncode == 2 and "UNAUTHENTICATED" in done.stderr, done.stderr
    done = _helium_run(served, workdir, *_tls_flags(pki, client_cert=False),
                       "--token-file", str(workdir / "token"))
    assert done.returncode == 2 and "UNAVAILABLE" in done.stderr, done.stderr


def test_bad_client_security_flags_exit_2_naming_the_flag(server):
    served, pki, workdir = server
    done = _helium_run(served, workdir, "--tls-ca", str(workdir / "token"))
    assert done.returncode == 2 and "--tls-ca" in done.stderr and "not a PEM file" in done.stderr
    done = _helium_run(served, workdir, "--tls-cert", str(pki.client_cert))
    assert done.returncode == 2 and "--tls-cert and --tls-key go together" in done.stderr


def test_a_token_over_plaintext_to_another_host_is_warned_about(server):
    served, _, workdir = server
    # 127.0.0.2 is not one of the loopback names the warning spares; nothing listens there.
    done = _helium_run(served, workdir, "--token-file", str(workdir / "token"),
                       server="127.0.0.2:1")
    assert "bearer tokens travel in plaintext to 127.0.0.2" in done.stderr
    assert done.returncode == 2 and "UNAVAILABLE" in done.stderr, done.stderr


def _cached_tokens(served, pki, token: str, system: str, question: str) -> int:
    creds = grpc.ssl_channel_credentials(pki.read("ca_cert"), pki.read("client_key"),
                                         pki.read("client_cert"))
    with grpc.secure_channel(served.address, creds) as channel:
        events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(
            one_call_request(system, question, **NO_RESULT_CACHE), metadata=bearer(token),
            timeout=60))
    return finished(events).cached_tokens


def _sighup_and_wait(served, line: str) -> None:
    seen = served.log().count(line)
    served.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while served.log().count(line) == seen:
        assert served.process.poll() is None and time.monotonic() < deadline, served.log()
        time.sleep(0.1)


def test_public_workflows_are_read_again_on_sighup(server):
    served, pki, workdir = server
    # At start FIRST is public: a tenant's first prompt with it reuses the warmed blocks.
    assert _cached_tokens(served, pki, TOKEN_A, FIRST, "Is breakfast included?") >= 32
    # (less than a block: the chat template's opening tokens, which a's FIRST run cached)
    assert _cached_tokens(served, pki, TOKEN_A, SECOND, "Do you have brake pads?") < 16
    _write_workflow(workdir / "public.yaml", SECOND, "garage")
    _sighup_and_wait(served, "public workflows reloaded")
    assert _cached_tokens(served, pki, TOKEN_B, SECOND, "Any wiper blades?") >= 32
    # FIRST is no longer public: a tenant that never sent it finds none of its blocks cached
    assert _cached_tokens(served, pki, TOKEN_C, FIRST, "Is there parking?") < 16
    (workdir / "public.yaml").write_text("workflow: {ops: [{id: x, llm: {prompt: nowhere}}]}")
    _sighup_and_wait(served, "public workflows not reloaded")
    assert _cached_tokens(served, pki, TOKEN_D, SECOND, "Oil filters?") >= 32  # kept in force
    assert "auth tokens reloaded" in served.log()  # SIGHUP still re-reads the tokens too
