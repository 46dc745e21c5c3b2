"""Runtime flags users expect: --threads and --dtype on `run` and `serve` (and the Triton
stand-in's config), --version, `python -m helium_trt`; each through the real command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from helium_trt.engine.embedded.cpu import cpu_flags, has_native_bf16, resolve_dtype, resolve_num_threads
from helium_trt.errors import InvalidRequestError
from serve_helpers import serve

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = {"workflow": {"name": "one-call", "ops": [
    {"id": "q", "input": {}},
    {"id": "p", "format": {"template": "Answer briefly: {q}"}},
    {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 3}}},
    {"id": "out", "output": {"input": "a"}},
]}, "rows": [{"q": "What is the capital of France?"}]}
BANNER = re.compile(r"embedded engine: (\w+), (\d+) torch thread")


def helium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helium_trt", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def workflow_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flags") / "wf.json"
    path.write_text(json.dumps(WORKFLOW))
    return path


def test_version_from_package_metadata_and_python_dash_m():
    for command in ([sys.executable, "-m", "helium_trt", "--version"], ["helium-trt", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"helium-trt {version('helium_trt')}"


def test_python_dash_m_is_the_command_line():
    done = helium("--help")
    assert done.returncode == 0 and "COMMAND" in done.stdout
    for command in ("run", "serve"):
        text = helium(command, "--help").stdout
        assert "--threads N" in text and "--dtype {float32,bfloat16}" in text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_run_uses_the_threads_and_dtype_asked_for(tiny_model_dir, workflow_file, tmp_path, dtype):
    stats = tmp_path / "stats.json"
    done = helium("run", str(workflow_file), "--model", str(tiny_model_dir), "--threads", "1",
                  "--dtype", dtype, "--stats-json", str(stats))
    assert done.returncode == 0, done.stderr
    assert BANNER.search(done.stderr).groups() == (dtype, "1")
    assert "out:" in done.stdout and json.loads(stats.read_text())["num_llm_calls"] == 1


def test_run_defaults_to_bf16_where_the_cpu_has_it_and_one_thread(tiny_model_dir, workflow_file):
    done = helium("run", str(workflow_file), "--model", str(tiny_model_dir))
    assert done.returncode == 0, done.stderr
    expected = "bfloat16" if has_native_bf16() else "float32"
    assert BANNER.search(done.stderr).groups() == (expected, "1")


def test_run_refuses_bad_flag_values(tiny_model_dir, workflow_file):
    zero = helium("run", str(workflow_file), "--model", str(tiny_model_dir), "--threads", "0")
    assert zero.returncode == 2 and "threads must be at least 1, got 0" in zero.stderr
    half = helium("run", str(workflow_file), "--model", str(tiny_model_dir), "--dtype", "float16")
    assert half.returncode == 2 and "invalid choice: 'float16'" in half.stderr


def test_serve_uses_the_threads_and_dtype_asked_for(tiny_model_dir, workflow_file, tmp_path):
    # serve_helpers passes --dtype float32 first; the later flag wins, as argparse does
    with serve(tiny_model_dir, tmp_path, "--workers", "2", "--threads", "1",
               "--dtype", "bfloat16") as served:
        done = helium("run", str(workflow_file), "--server", served.address)
        log = served.log()
    assert done.returncode == 0, done.stderr
    assert BANNER.search(log).groups() == ("bfloat16", "1"), log
    assert "out:" in done.stdout


def test_serve_refuses_zero_threads(tiny_model_dir):
    done = helium("serve", "--model", str(tiny_model_dir), "--threads", "0", timeout=60)
    assert done.returncode == 2 and "threads must be at least 1" in done.stderr


def test_standin_reads_dtype_and_threads_from_config_and_environment():
    from helium_trt.engine.triton.trtllm_standin import DTYPE_ENV, THREADS_ENV, StandInConfig

    text = (ROOT / "model_repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    params = dict(re.findall(r'key: "(\w+)", value: \{ string_value: "([^"]*)" \}', text))
    assert params["dtype"] == "" and params["threads"] == ""
    shipped = StandInConfig.from_parameters(params, {}).engine_config()
    assert (shipped.dtype, shipped.num_threads) == (resolve_dtype(None), 1)
    asked = StandInConfig.from_parameters({**params, "dtype": "float32", "threads": "2"}, {})
    assert (asked.engine_config().dtype, asked.engine_config().num_threads) == ("float32", 2)
    env = StandInConfig.from_parameters({**params, "dtype": "float32"},
                                        {DTYPE_ENV: "bfloat16", THREADS_ENV: "3"})
    assert (env.engine_config().dtype, env.engine_config().num_threads) == ("bfloat16", 3)
    with pytest.raises(InvalidRequestError, match="dtype 'float16' is not one of"):
        StandInConfig.from_parameters({"dtype": "float16"}, {}).engine_config()


def test_bf16_detection_reads_the_cpu_flags():
    assert cpu_flags("processor: 0\nflags\t\t: fpu sse avx512f\n") == {"fpu", "sse", "avx512f"}
    assert not has_native_bf16(frozenset({"avx512f", "avx2"}))
    assert has_native_bf16(cpu_flags()) == ("bfloat16" == resolve_dtype(None))
    assert resolve_dtype("float32") == "float32" and resolve_num_threads(None) == 1
