"""The tritonserver launcher and `helium-trt triton up`: readiness, failures that name their cause,
a stub that hangs, loopback-only listeners, clean shutdown. Uses tiny throwaway model repositories
(no torch in the stub), so each server starts in a second or two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helium_trt.errors import EngineUnavailableError, ModelNotFoundError
from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer, find_tritonserver

pytestmark = pytest.mark.slow

CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_INT32, dims: [ -1 ] } ]
output [ { name: "y", data_type: TYPE_INT32, dims: [ -1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
MODEL = """
import time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        {initialize}

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "x")]) for r in requests]
"""


@pytest.fixture(scope="module")
def install():
    try:
        return find_tritonserver()
    except EngineUnavailableError as exc:
        pytest.skip(str(exc))


def make_repo(root: Path, initialize: str = "pass") -> Path:
    model = root / "repo" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(MODEL.replace("{initialize}", initialize))
    return root / "repo"


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, /proc/net/tcp form) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def test_server_is_ready_on_loopback_only_and_stops(install, tmp_path):
    server = TritonServer(TritonLaunchConfig(model_repo=make_repo(tmp_path)), install)
    with server:
        with urllib.request.urlopen(f"{server.http_url}/v2/models/echo/ready", timeout=5) as response:
            assert response.status == 200
        for port in (server.grpc_port, server.http_port):
            # 127.0.0.1, as IPv4 or IPv4-mapped IPv6 (::ffff:127.0.0.1), and nothing else
            assert listening_addresses(port) <= {"0100007F", "0000000000000000FFFF00000100007F"}
            assert listening_addresses(port)
        assert "--allow-metrics=false" in server.command(Path("x"))
        process = server._process
    assert process.poll() is not None


def test_a_model_that_fails_to_load_is_reported_with_its_error(install, tmp_path):
    repo = make_repo(tmp_path, initialize="raise RuntimeError('weights are missing: /nowhere')")
    with pytest.raises(EngineUnavailableError, match="exited with status") as caught:
        TritonServer(TritonLaunchConfig(model_repo=repo), install).start()
    assert "weights are missing: /nowhere" in str(caught.value)


def test_a_hanging_stub_times_out_with_a_clear_message(install, tmp_path):
    repo = make_repo(tmp_path, initialize="time.sleep(600)")
    server = TritonServer(TritonLaunchConfig(model_repo=repo, startup_timeout_s=4, stop_timeout_s=6), install)
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="not ready after 4s") as caught:
        server.start()
    assert "hangs instead of failing" in str(caught.value) and "numpy<2" in str(caught.value)
    assert time.monotonic() - started < 30
    assert server._process is None


def test_a_missing_repository_is_not_found(install, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        TritonServer(TritonLaunchConfig(model_repo=tmp_path / "nope"), install).start()


def test_cli_triton_up_serves_until_sigterm(install, tmp_path):
    command = [sys.executable, "-m", "helium_trt.server.cli", "triton", "up",
               "--model-repo", str(make_repo(tmp_path)), "--startup-timeout", "60"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        http_url = lines[-1].split("http ")[1].strip()
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "stopping tritonserver" in process.stdout.read()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
