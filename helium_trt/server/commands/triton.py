"""`helium-trt triton up`: run tritonserver on a model repository until interrupted.

Loopback and free ports by default; a GPU node serving remote helium servers gives the bind
address and fixed ports, and passes any other tritonserver option after ``--``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV
from helium_trt.server.triton_launcher import LOOPBACK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("triton", help="run tritonserver on a helium model repository")
    actions = parser.add_subparsers(dest="triton_command", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up", help="start tritonserver, wait until its models are ready, serve until Ctrl-C or SIGTERM",
        description="Start tritonserver (gRPC, HTTP and Prometheus metrics on one address), wait "
                    "until its models are ready, serve until Ctrl-C or SIGTERM. Options after `--` "
                    "go to tritonserver unchanged, e.g. `-- --pinned-memory-pool-byte-size=268435456`.",
    )
    up.add_argument("--model-repo", type=Path, default=Path("model_repo"),
                    help="model repository (default: ./model_repo, the CPU repository)")
    up.add_argument("--address", default=LOOPBACK,
                    help=f"address gRPC, HTTP and metrics bind to (default: {LOOPBACK}; 0.0.0.0 for "
                         "every interface, for helium servers on other machines)")
    up.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: a free one)")
    up.add_argument("--http-port", type=int, default=None, help="HTTP port (default: a free one)")
    up.add_argument("--metrics-port", type=int, default=None,
                    help="Prometheus metrics port, served at /metrics (default: a free one)")
    up.add_argument("--no-metrics", action="store_true", help="turn Triton's metrics endpoint off")
    up.add_argument("--model-dir", type=Path, default=None,
                    help=f"model directory for the CPU stand-in (sets ${MODEL_DIR_ENV})")
    up.add_argument("--python", default=sys.executable,
                    help="interpreter of the model environment (default: this one)")
    up.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--log-file", type=Path, default=None,
                    help="server log, appended to and kept (default: a temporary file deleted on exit)")
    up.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    up.add_argument("tritonserver_args", nargs="*", metavar="-- TRITONSERVER_OPTION",
                    help="further tritonserver options, after `--`")
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    from helium_trt.errors import HeliumError, InvalidRequestError
    from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer, check_extra_args

    try:
        extra_args = check_extra_args(args.tritonserver_args)
    except InvalidRequestError as exc:
        print(f"error: {exc} (see helium-trt triton up --help)", file=sys.stderr)
        return 2
    env = {MODEL_DIR_ENV: str(args.model_dir.resolve())} if args.model_dir else {}
    config = TritonLaunchConfig(
        model_repo=args.model_repo, grpc_port=args.grpc_port, http_port=args.http_port,
        metrics_port=args.metrics_port, address=args.address, metrics=not args.no_metrics,
        extra_args=extra_args, startup_timeout_s=args.startup_timeout, python=args.python, env=env,
        log_path=args.log_file, log_verbose=args.log_verbose,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = TritonServer(config)
        kept = "kept" if args.log_file else "deleted on exit"
        print(f"starting tritonserver on {args.model_repo}, listening on {args.address} "
              f"(log: {server.log_path}, {kept})", flush=True)
        with server:
            metrics = f"  metrics {server.metrics_url}" if server.metrics_url else ""
            print(f"ready: grpc {server.grpc_url}  http {server.http_url}{metrics}", flush=True)
            stop.wait()
            print("stopping tritonserver", flush=True)
    except HeliumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
