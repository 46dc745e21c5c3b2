"""The vLLM peer: a bf16 export of the model, and its OpenAI-compatible server as a subprocess.

vLLM lives in its own virtual environment (benchmarks/setup_vllm.sh); nothing here imports it.
The server listens on 127.0.0.1 only and is stopped when the benchmark's vLLM session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_VENV = Path("/work/.vllm-venv")
VENV_ENV = "HELIUM_VLLM_VENV"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "generation_config.json", "vocab.json", "merges.txt")


@dataclass(frozen=True, slots=True)
class VllmConfig:
    venv: Path
    model_dir: Path
    port: int = 8765
    block_size: int = 32
    kv_cache_gib: int = 2
    max_model_len: int = 8192
    startup_timeout_s: float = 600.0
    log_path: Path = Path("benchmarks/results/vllm_server.log")
    omp_threads_bind: str = "0-1"  # VLLM_CPU_OMP_THREADS_BIND: the cores its OpenMP threads use


def venv_path() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def is_available(venv: Path | None = None) -> bool:
    return (Path(venv or venv_path()) / "bin" / "python").exists()


def export_bf16(source: Path, target: Path) -> Path:
    """``source`` (HF folder) as bfloat16 safetensors under ``target``; reused when present."""
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path in sorted(source.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "bfloat16"
    # Older transformers read rope_theta at the top level.
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    return target


def server_command(config: VllmConfig) -> list[str]:
    return [str(config.venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(config.model_dir), "--served-model-name", "bench",
            "--host", "127.0.0.1", "--port", str(config.port), "--dtype", "bfloat16",
            "--enforce-eager", "--enable-prefix-caching", "--enable-prompt-tokens-details",
            "--block-size", str(config.block_size), "--max-model-len", str(config.max_model_len)]


@contextmanager
def running_server(config: VllmConfig) -> Iterator[str]:
    """Starts the server, yields its URL once /health answers, stops it afterwards."""
    with running_server_process(config) as (url, _):
        yield url


@contextmanager
def running_server_process(config: VllmConfig) -> Iterator[tuple[str, subprocess.Popen]]:
    """``running_server``, also yielding the server process (a session leader: its pid is the
    session id of every process it starts)."""
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=config.omp_threads_bind,
               VLLM_CPU_KVCACHE_SPACE=str(config.kv_cache_gib), VLLM_SERVER_DEV_MODE="1")
    config.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(config.log_path, "w") as log:
        process = subprocess.Popen(server_command(config), stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        url = f"http://127.0.0.1:{config.port}"
        try:
            _wait_healthy(url, process, config)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def reset_prefix_cache(url: str) -> bool:
    """Empties vLLM's prefix cache (dev-mode endpoint) so each system starts cold."""
    try:
        request = urllib.request.Request(url + "/reset_prefix_cache", method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status == 200
    except OSError:
        return False


def _wait_healthy(url: str, process: subprocess.Popen, config: VllmConfig) -> None:
    deadline = time.monotonic() + config.startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {process.returncode}; "
                               f"see {config.log_path}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"vLLM server not healthy after {config.startup_timeout_s:.0f} s")
