"""Start and stop a local tritonserver on a model repository: shared by `helium-trt triton up` and tests.

The server binary comes from ``$HELIUM_TRITONSERVER_HOME`` (a Triton install such as the NGC
container's /opt/tritonserver) or from the nvidia-pytriton wheel, which bundles tritonserver 2.51
with the Python backend. The wheel ships one Python backend stub per interpreter version outside
its backend directory, so the launcher assembles a private backend directory of symlinks next to
the server's log instead of writing into site-packages.

The stub embeds libpython and finds its packages through the ``python3`` first on PATH, so the
model environment's interpreter goes first on PATH and its LIBDIR on LD_LIBRARY_PATH. A missing
library makes the stub hang rather than fail, hence the readiness deadline.

gRPC, HTTP and Prometheus metrics all bind to one address, 127.0.0.1 unless told otherwise, on
free ports unless told otherwise. The metrics address is passed explicitly although 2.51 already
defaults it to --http-address, so a Triton build without HTTP cannot put it on 0.0.0.0.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from helium_trt.errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError

TRITONSERVER_HOME_ENV = "HELIUM_TRITONSERVER_HOME"
LOOPBACK = "127.0.0.1"
_WILDCARDS = {"0.0.0.0": LOOPBACK, "::": "::1", "": LOOPBACK}
# Options the launcher sets from its own config (TritonLaunchConfig field, `triton up` flag);
# passing them through would contradict it.
_OWNED_OPTIONS = {
    "--model-repository": ("model_repo", "--model-repo"), "--backend-directory": None,
    "--grpc-address": ("address", "--address"), "--http-address": ("address", "--address"),
    "--metrics-address": ("address", "--address"), "--grpc-port": ("grpc_port", "--grpc-port"),
    "--http-port": ("http_port", "--http-port"), "--metrics-port": ("metrics_port", "--metrics-port"),
    "--allow-metrics": ("metrics", "--no-metrics"), "--log-file": ("log_path", "--log-file"),
    "--log-verbose": ("log_verbose", "--log-verbose"),
}
_PY_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
_STUB = "triton_python_backend_stub"
_NUM_LOG_LINES_IN_ERRORS = 40


@dataclass(frozen=True, slots=True)
class TritonInstall:
    """Where a tritonserver binary and its backends live."""

    binary: Path
    backends_dir: Path
    python_stub: Path | None  # a stub to link in when backends_dir/python lacks one


@dataclass(frozen=True, slots=True)
class TritonLaunchConfig:
    """How to run tritonserver. Ports None pick free ones; ``python`` is the model environment.

    ``address`` is where gRPC, HTTP and metrics listen. A ``log_path`` given is kept after the
    server stops (the default log lives in a temporary directory removed on stop).
    ``extra_args`` go to tritonserver after the launcher's own options, so an option given there
    (``--pinned-memory-pool-byte-size``, ``--exit-timeout-secs``, ...) overrides the launcher's
    default; options this config already holds are refused (``check_extra_args``).
    """

    model_repo: Path
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    address: str = LOOPBACK
    metrics: bool = True
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    log_path: Path | None = None
    log_verbose: int = 0


def find_tritonserver() -> TritonInstall:
    """Locate tritonserver: ``$HELIUM_TRITONSERVER_HOME`` first, then the nvidia-pytriton wheel."""
    home = os.environ.get(TRITONSERVER_HOME_ENV)
    if home:
        root = Path(home)
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise EngineUnavailableError(f"${TRITONSERVER_HOME_ENV}={home!r} has no bin/tritonserver")
        return TritonInstall(binary, root / "backends", None)
    # find_spec does not run pytriton/__init__.py, which needs pytriton's client-side deps.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            "tritonserver not found: install it with `pip install nvidia-pytriton==0.7.0` "
            f"(see docs/triton.md) or set ${TRITONSERVER_HOME_ENV} to a Triton install"
        )
    root = Path(spec.submodule_search_locations[0]) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / _STUB
    if not (root / "bin" / "tritonserver").is_file() or not stub.is_file():
        raise EngineUnavailableError(f"{root}: incomplete tritonserver bundle (no binary or no stub for Python {version})")
    return TritonInstall(root / "bin" / "tritonserver", root / "backends", stub)


def pick_free_port(address: str = LOOPBACK) -> int:
    """A TCP port free on ``address`` right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def check_extra_args(extra_args: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``extra_args`` as a tuple, or InvalidRequestError naming an option the launcher owns."""
    args = tuple(extra_args)
    if args and not args[0].startswith("-"):
        raise InvalidRequestError(f"tritonserver option expected, got {args[0]!r}: options start with --")
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in _OWNED_OPTIONS:
            owner = _OWNED_OPTIONS[name]
            instead = (f"set TritonLaunchConfig.{owner[0]} (`triton up {owner[1]}`) instead" if owner
                       else "the launcher sets it")
            raise InvalidRequestError(f"tritonserver option {name} cannot be passed through: {instead}")
    return args


def _url_host(address: str) -> str:
    """The host part of a URL that reaches a server bound to ``address`` from this machine."""
    host = _WILDCARDS.get(address, address)
    return f"[{host}]" if ":" in host else host


class TritonServer:
    """A tritonserver child process; use as a context manager (``with TritonServer(cfg) as s``).

    ``start`` returns once every model in the repository is ready, or raises
    EngineUnavailableError with the tail of the server log.
    """

    def __init__(self, config: TritonLaunchConfig, install: TritonInstall | None = None):
        self.config = config
        self.install = install or find_tritonserver()
        self.extra_args = check_extra_args(config.extra_args)
        self.grpc_port = config.grpc_port or pick_free_port(config.address)
        self.http_port = config.http_port or pick_free_port(config.address)
        self.metrics_port = (config.metrics_port or pick_free_port(config.address)) if config.metrics else None
        self._workdir = tempfile.TemporaryDirectory(prefix="helium-triton-")
        self.log_path = config.log_path or Path(self._workdir.name) / "tritonserver.log"
        self._process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        """host:port reaching the gRPC endpoint from this machine (loopback for a wildcard address)."""
        return f"{_url_host(self.config.address)}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.config.address)}:{self.http_port}"

    @property
    def metrics_url(self) -> str | None:
        """The Prometheus endpoint (``.../metrics``), None with metrics off."""
        if self.metrics_port is None:
            return None
        return f"http://{_url_host(self.config.address)}:{self.metrics_port}/metrics"

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> TritonServer:
        repo = Path(self.config.model_repo).resolve()
        if not repo.is_dir():
            raise ModelNotFoundError(f"model repository {str(repo)!r} does not exist")
        command = self.command(repo)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def command(self, repo: Path) -> list[str]:
        address = self.config.address
        if self.metrics_port is None:
            metrics = ["--allow-metrics=false"]
        else:
            metrics = ["--allow-metrics=true", f"--metrics-address={address}", f"--metrics-port={self.metrics_port}"]
        return [
            str(self.install.binary),
            f"--model-repository={repo}",
            f"--backend-directory={self._backend_directory()}",
            f"--grpc-address={address}", f"--grpc-port={self.grpc_port}",
            f"--http-address={address}", f"--http-port={self.http_port}",
            *metrics,
            # NOTE: no pinned host memory by default: the CPU stand-in has no use for it; a GPU
            # node can pass --pinned-memory-pool-byte-size=N through extra_args.
            "--pinned-memory-pool-byte-size=0",
            "--exit-on-error=true",
            f"--exit-timeout-secs={max(1, int(self.config.stop_timeout_s) - 5)}",
            f"--log-verbose={self.config.log_verbose}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.env)
        python_bin = str(Path(self.config.python).parent)
        env["PATH"] = os.pathsep.join([python_bin, env.get("PATH", "")])
        libdir = _python_libdir(self.config.python)
        if libdir:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
        return env

    def stop(self) -> None:
        """Ask the server to exit (SIGTERM), then kill its process group after the timeout.

        NOTE: tritonserver 2.51's Python backend may never finalize a decoupled model on
        shutdown after a client dropped a stream right after its final response (TritonEngine
        reads each stream to its end for that reason); the server then waits out
        --exit-timeout-secs (stop_timeout_s - 5) and exits anyway.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                # NOTE: the group is the one this launcher created (start_new_session), so this
                # reaches tritonserver and its backend stubs and nothing else.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._workdir.cleanup()

    def log_tail(self, num_lines: int = _NUM_LOG_LINES_IN_ERRORS) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-num_lines:])

    # ---- internals -----------------------------------------------------------------------------

    def _backend_directory(self) -> Path:
        """The install's backends, or for the pytriton bundle a symlinked copy holding the stub."""
        if self.install.python_stub is None:
            return self.install.backends_dir
        root = Path(self._workdir.name) / "backends"
        python_dir = root / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        sources = {name: self.install.backends_dir / "python" / name for name in _PY_BACKEND_FILES}
        sources[_STUB] = self.install.python_stub
        for name, source in sources.items():
            link = python_dir / name
            if not link.exists():
                link.symlink_to(source)
        return root

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise EngineUnavailableError(
                    f"tritonserver exited with status {code} while loading {self.config.model_repo}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if _http_ok(url):
                return
            time.sleep(0.25)
        raise EngineUnavailableError(
            f"tritonserver was not ready after {self.config.startup_timeout_s:.0f}s. A Python backend "
            "stub that cannot load a library hangs instead of failing: check that the model "
            f"environment ({self.config.python}) has numpy<2 and helium_trt installed and that "
            f"its libpython is on LD_LIBRARY_PATH. log {self.log_path}:\n{self.log_tail()}"
        )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _python_libdir(python: str) -> str | None:
    """LIBDIR (where libpython lives) of the interpreter at ``python``."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return sysconfig.get_config_var("LIBDIR")
    result = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        capture_output=True, text=True, check=False,
    )
    return result.stdout.strip() or None
