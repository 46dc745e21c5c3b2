"""`serve`'s log and metrics flags: --log-level, one structured line per run, --metrics-port."""

from __future__ import annotations

import argparse
import logging
import sys

from helium_trt.server.run_record import log_run

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_observe_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                   help="server log level (default info: one line per run with tenant, "
                   "workflow, rows, calls, prefill tokens, wall ms and status; warnings for "
                   "refused requests; nothing per token)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics, HOST being "
                   "--address's host (0 picks a free port; default: no metrics)")


class Observability:
    """The run log and, with --metrics-port, the metrics of one `serve` process."""

    def __init__(self, args: argparse.Namespace) -> None:
        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._port = args.metrics_port
        self._host = args.address.rsplit(":", 1)[0]
        self.metrics = None
        self._httpd = None
        if self._port is not None:
            from helium_trt.server.metrics import ServerMetrics

            self.metrics = ServerMetrics()

    def wrap(self, engines: list) -> list:
        """``engines`` as the core should hold them (timed for metrics when they are on)."""
        return self.metrics.instrument(engines) if self.metrics is not None else engines

    def attach(self, core) -> None:
        """Log ``core``'s runs and, with metrics on, start serving them."""
        core.observers.append(log_run)
        if self.metrics is None:
            return
        self.metrics.attach(core)
        self._httpd = self.metrics.serve(self._host, self._port)
        print(f"helium-trt serve: Prometheus metrics on http://{self._host}:"
              f"{self._httpd.server_port}/metrics", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
