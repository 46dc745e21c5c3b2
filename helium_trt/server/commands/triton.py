"""`helium-trt triton up`: run a local tritonserver on a model repository until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("triton", help="run tritonserver on a helium model repository")
    actions = parser.add_subparsers(dest="triton_command", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up", help="start tritonserver (127.0.0.1 only), wait until its models are ready, "
                   "serve until Ctrl-C or SIGTERM",
    )
    up.add_argument("--model-repo", type=Path, default=Path("model_repo"),
                    help="model repository (default: ./model_repo, the CPU repository)")
    up.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: a free one)")
    up.add_argument("--http-port", type=int, default=None, help="HTTP port (default: a free one)")
    up.add_argument("--model-dir", type=Path, default=None,
                    help=f"model directory for the CPU stand-in (sets ${MODEL_DIR_ENV})")
    up.add_argument("--python", default=sys.executable,
                    help="interpreter of the model environment (default: this one)")
    up.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--log-file", type=Path, default=None, help="server log (default: a temporary file)")
    up.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    from helium_trt.errors import HeliumError
    from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer

    env = {MODEL_DIR_ENV: str(args.model_dir.resolve())} if args.model_dir else {}
    config = TritonLaunchConfig(
        model_repo=args.model_repo, grpc_port=args.grpc_port, http_port=args.http_port,
        startup_timeout_s=args.startup_timeout, python=args.python, env=env,
        log_path=args.log_file, log_verbose=args.log_verbose,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = TritonServer(config)
        print(f"starting tritonserver on {args.model_repo} (log: {server.log_path})", flush=True)
        with server:
            print(f"ready: grpc {server.grpc_url}  http {server.http_url}", flush=True)
            stop.wait()
            print("stopping tritonserver", flush=True)
    except HeliumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
