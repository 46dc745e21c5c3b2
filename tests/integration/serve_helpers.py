"""Start a real `helium-trt serve` process on 127.0.0.1 for a test, with its log in a file."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class ServedProcess:
    address: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve(model_dir: Path, workdir: Path, *args: str, threads: int = 1,
          start_timeout_s: float = 120) -> Iterator[ServedProcess]:
    """`helium-trt serve --model model_dir ARGS` on a free port; stdout and stderr go to
    ``workdir/serve.log``. The process is stopped (SIGTERM, then SIGKILL) on exit."""
    port_file, log_path = workdir / "port", workdir / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
             "--model", str(model_dir), "--port-file", str(port_file), "--dtype", "float32", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"helium-trt serve did not start: {log_path.read_text()}")
            time.sleep(0.1)
        yield ServedProcess(f"127.0.0.1:{port_file.read_text().strip()}", log_path, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
