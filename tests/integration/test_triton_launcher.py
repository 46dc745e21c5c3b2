"""The tritonserver launcher and `helium-trt triton up`: readiness, failures that name their cause,
a stub that hangs, loopback-only listeners (metrics included), fixed ports, a kept log, options
passed through, clean shutdown. Uses tiny throwaway model repositories (no torch in the stub), so
each server starts in a second or two."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helium_trt.errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError
from helium_trt.server.triton_launcher import (
    TritonLaunchConfig,
    TritonServer,
    check_extra_args,
    find_tritonserver,
    pick_free_port,
)

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


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def test_server_is_ready_on_loopback_only_and_stops(install, tmp_path):
    server = TritonServer(TritonLaunchConfig(model_repo=make_repo(tmp_path)), install)
    with server:
        http_get(f"{server.http_url}/v2/models/echo/ready")
        for port in (server.grpc_port, server.http_port, server.metrics_port):
            # 127.0.0.1, as IPv4 or IPv4-mapped IPv6 (::ffff:127.0.0.1), and nothing else
            assert listening_addresses(port) <= {"0100007F", "0000000000000000FFFF00000100007F"}
            assert listening_addresses(port)
        assert server.metrics_url == f"http://127.0.0.1:{server.metrics_port}/metrics"
        assert 'nv_inference_count{model="echo",version="1"} 0' in http_get(server.metrics_url)
        process = server._process
    assert process.poll() is not None


def test_fixed_ports_a_kept_log_and_options_passed_through(install, tmp_path):
    ports = {name: pick_free_port() for name in ("grpc_port", "http_port", "metrics_port")}
    log_path = tmp_path / "node1.log"
    config = TritonLaunchConfig(model_repo=make_repo(tmp_path), address="127.0.0.1", log_path=log_path,
                                extra_args=("--id=helium-node-1", "--pinned-memory-pool-byte-size=1048576"),
                                **ports)
    with TritonServer(config, install) as server:
        assert (server.grpc_port, server.http_port, server.metrics_port) == tuple(ports.values())
        assert json.loads(http_get(f"http://127.0.0.1:{ports['http_port']}/v2"))["name"] == "helium-node-1"
        assert "nv_" in http_get(f"http://127.0.0.1:{ports['metrics_port']}/metrics")
    log = log_path.read_text()  # kept after exit; it holds the server's table of options in force
    assert re.search(r"\| server_id +\| helium-node-1 ", log), log[-2000:]
    # given after the launcher's own --pinned-memory-pool-byte-size=0, the passed value wins
    assert re.search(r"\| pinned_memory_pool_byte_size +\| 1048576 ", log), log[-2000:]


def test_a_node_command_binds_every_endpoint_to_the_address(install, tmp_path):
    config = TritonLaunchConfig(model_repo=tmp_path, address="0.0.0.0", grpc_port=8001, http_port=8000,
                                metrics_port=8002, extra_args=("--pinned-memory-pool-byte-size=268435456",))
    server = TritonServer(config, install)  # not started: nothing binds 0.0.0.0 here
    try:
        command = server.command(tmp_path)
    finally:
        server.stop()
    for option in ("--grpc-address=0.0.0.0", "--grpc-port=8001", "--http-address=0.0.0.0", "--http-port=8000",
                   "--allow-metrics=true", "--metrics-address=0.0.0.0", "--metrics-port=8002"):
        assert option in command
    assert command[-1] == "--pinned-memory-pool-byte-size=268435456"  # after the default it overrides
    assert (server.grpc_url, server.metrics_url) == ("127.0.0.1:8001", "http://127.0.0.1:8002/metrics")
    off = TritonServer(TritonLaunchConfig(model_repo=tmp_path, metrics=False), install)
    assert "--allow-metrics=false" in off.command(tmp_path) and off.metrics_url is None
    off.stop()


@pytest.mark.parametrize("args, message", [
    (("--grpc-port=8001",), r"--grpc-port cannot be passed through: set TritonLaunchConfig.grpc_port"),
    (("--http-address", "0.0.0.0"), r"--http-address .*`triton up --address`"),
    (("--allow-metrics=false",), r"`triton up --no-metrics`"),
    (("model_repo",), r"option expected, got 'model_repo'"),
])
def test_options_the_launcher_owns_are_refused(args, message):
    with pytest.raises(InvalidRequestError, match=message):
        check_extra_args(args)


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
        http_url = re.search(r"  http (\S+)", lines[-1]).group(1)
        assert re.search(r"  metrics http://127\.0\.0\.1:\d+/metrics$", lines[-1]), lines[-1]
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "stopping tritonserver" in process.stdout.read()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
