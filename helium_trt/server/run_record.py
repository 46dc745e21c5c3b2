"""One record per run, for the server's metrics and its log: who ran what, how big, how it ended.

HeliumCore hands a RunRecord to each of its observers when a run ends, however it ends (finished,
rows failed, cancelled by the client, past its deadline, refused by a quota, or failed).
``log_run`` is the observer that writes the structured log line: ``key=value`` pairs (logfmt),
one line per run and nothing per call or token.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields

from helium_trt.api.helium.v1 import service_pb2

log = logging.getLogger("helium_trt.runs")

# Statuses of runs that were served (the others were refused or failed: logged as warnings).
SERVED_STATUSES = ("ok", "rows_failed", "cancelled", "deadline_exceeded")
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+-]+")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """``status``: ok, rows_failed, cancelled, deadline_exceeded, or the lower-case gRPC code of
    the error that ended the run (resource_exhausted, permission_denied, invalid_argument, ...)."""

    tenant: str
    workflow: str
    model: str
    status: str
    num_rows: int
    num_llm_calls: int = 0
    prefill_tokens_computed: int = 0
    prefill_tokens_reused: int = 0
    num_result_cache_hits: int = 0
    num_rows_failed: int = 0
    wall_ms: float = 0.0
    error: str = ""  # why a refused or failed run ended (logged only when set)


class RunTally:
    """Builds a run's RunRecord from the helium.v1 events it streams."""

    def __init__(self, tenant: str, workflow: str, model: str, num_rows: int) -> None:
        self._base = dict(tenant=tenant, workflow=workflow, model=model, num_rows=num_rows)
        self._stats: service_pb2.RunStats | None = None
        self._deadlined = False

    def see(self, event: service_pb2.RunEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "run_stats":
            self._stats = event.run_stats
        elif kind == "error" and event.error.row < 0 and \
                event.error.code == service_pb2.ERROR_CODE_DEADLINE_EXCEEDED:
            self._deadlined = True

    def record(self, wall_ms: float, failure: str | None = None, error: str = "") -> RunRecord:
        """The record; ``failure`` is the status of an exception that ended the run, ``error``
        its message."""
        s = self._stats
        if failure is not None:
            status = failure
        elif self._deadlined:
            status = "deadline_exceeded"
        elif s is None:
            status = "cancelled"  # the stream was closed before the run's statistics
        else:
            status = "rows_failed" if s.num_rows_failed else "ok"
        if s is None:
            return RunRecord(**self._base, status=status, wall_ms=wall_ms, error=error)
        return RunRecord(**self._base, status=status, num_llm_calls=s.num_llm_calls,
                         prefill_tokens_computed=s.prefill_tokens_computed,
                         prefill_tokens_reused=s.prefill_tokens_reused,
                         num_result_cache_hits=s.num_result_cache_hits,
                         num_rows_failed=s.num_rows_failed, wall_ms=wall_ms, error=error)


def log_run(record: RunRecord) -> None:
    """The run's one log line: INFO when it was served, WARNING when refused or failed."""
    level = logging.INFO if record.status in SERVED_STATUSES else logging.WARNING
    if log.isEnabledFor(level):
        log.log(level, "run %s", format_record(record))


def format_record(record: RunRecord) -> str:
    parts = []
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name == "error" and not value:
            continue
        if isinstance(value, float):
            value = f"{value:.1f}"
        elif isinstance(value, str) and not _PLAIN.fullmatch(value):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{f.name}={value}")
    return " ".join(parts)
