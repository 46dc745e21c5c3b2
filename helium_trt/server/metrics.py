"""Prometheus metrics of the helium server (`serve --metrics-port`), with prometheus_client.

Three sources, each where its figures are exact:
- every run's RunRecord (HeliumCore's observers): runs by tenant and status, LLM calls and
  prefill tokens by tenant and model, run latency by tenant;
- the engines, wrapped by InstrumentedEngine: time to first token of every LLM call, by model;
- state read when scraped: result-cache hits, misses and bytes and runs in flight per tenant,
  KV blocks used and free and engine requests running and waiting per engine worker.

Label values are bounded: tenants come from the tokens file (one `default` without auth), models
and workers from the engines, statuses from RunRecord's fixed set and gRPC's codes.
"""

from __future__ import annotations

import time
from typing import AsyncIterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from helium_trt.engine.base import Engine, EngineRequest, RequestResult, TokenDelta
from helium_trt.server.run_record import RunRecord

RUN_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerMetrics:
    """The metrics of one server; ``instrument`` its engines, then ``attach`` its HeliumCore."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("helium_runs", "Runs that ended, by tenant and status (ok, "
                            "rows_failed, cancelled, deadline_exceeded, or the gRPC code that "
                            "refused or failed it)", ["tenant", "status"], registry=r)
        self.llm_calls = Counter("helium_llm_calls", "LLM calls sent to an engine (result-cache "
                                 "hits excluded)", ["tenant", "model"], registry=r)
        self.prefill_tokens = Counter(
            "helium_prefill_tokens", "Prompt tokens prefilled: computed by an engine, or reused "
            "from its KV cache", ["tenant", "model", "kind"], registry=r)
        self.run_seconds = Histogram("helium_run_duration_seconds", "Wall time of a run, from "
                                     "request to its last event", ["tenant"], registry=r,
                                     buckets=RUN_SECONDS_BUCKETS)
        self.ttft_seconds = Histogram("helium_time_to_first_token_seconds", "Time from an LLM "
                                      "call's submission to its first token", ["model"],
                                      registry=r, buckets=TTFT_SECONDS_BUCKETS)

    def instrument(self, engines: Sequence[Engine]) -> list[Engine]:
        return [InstrumentedEngine(e, self.ttft_seconds.labels(e.info.model_name)) for e in engines]

    def attach(self, core) -> None:
        """Count ``core``'s runs and read its state at every scrape."""
        core.observers.append(self.on_run)
        self.registry.register(_StateCollector(core))

    def on_run(self, record: RunRecord) -> None:
        self.runs.labels(record.tenant, record.status).inc()
        self.run_seconds.labels(record.tenant).observe(record.wall_ms / 1000.0)
        self.llm_calls.labels(record.tenant, record.model).inc(record.num_llm_calls)
        tokens = self.prefill_tokens
        tokens.labels(record.tenant, record.model, "computed").inc(record.prefill_tokens_computed)
        tokens.labels(record.tenant, record.model, "reused").inc(record.prefill_tokens_reused)

    def serve(self, host: str, port: int):
        """Serve /metrics over HTTP on ``host:port`` (0: a free port) in a daemon thread;
        returns the HTTP server (``server_port``, ``shutdown()``)."""
        httpd, _thread = start_http_server(port, addr=host.strip("[]"), registry=self.registry)
        return httpd


class _StateCollector:
    """Figures read from the core at scrape time (exact, and nothing to keep in step)."""

    def __init__(self, core) -> None:
        self._core = core

    def collect(self):
        hits = CounterMetricFamily("helium_result_cache_hits", "Prompt-result cache lookups that "
                                   "found a result", labels=["tenant"])
        misses = CounterMetricFamily("helium_result_cache_misses", "Prompt-result cache lookups "
                                     "that found none", labels=["tenant"])
        size = GaugeMetricFamily("helium_result_cache_bytes", "Bytes held by the prompt-result "
                                 "cache", labels=["tenant"])
        inflight = GaugeMetricFamily("helium_runs_in_flight", "Runs started and not ended",
                                     labels=["tenant"])
        for state in self._core.tenants.all():
            stats, name = state.caches.prompt_cache.stats(), state.tenant.name
            hits.add_metric([name], stats.num_hits)
            misses.add_metric([name], stats.num_misses)
            size.add_metric([name], stats.num_bytes)
            inflight.add_metric([name], state.counters.inflight_runs)
        yield from (hits, misses, size, inflight)
        yield from _engine_families(self._core.engines)


def _engine_families(engines: Sequence[Engine]):
    blocks = GaugeMetricFamily("helium_kv_blocks", "KV cache blocks per engine worker: used "
                               "(held by requests) or free (free or evictable cached)",
                               labels=["engine", "model", "state"])
    requests = GaugeMetricFamily("helium_engine_requests", "LLM calls inside an engine worker: "
                                 "running or waiting (the engine's queue)",
                                 labels=["engine", "model", "state"])
    for index, engine in enumerate(engines):
        labels = [str(index), engine.info.model_name]
        free = engine.num_free_blocks()
        blocks.add_metric(labels + ["used"], engine.info.num_blocks - free)
        blocks.add_metric(labels + ["free"], free)
        load = getattr(engine, "load", None)  # the embedded engine's; Triton has none
        if load is not None:
            now = load()
            requests.add_metric(labels + ["running"], now.num_running)
            requests.add_metric(labels + ["waiting"], now.num_waiting)
    return blocks, requests


class InstrumentedEngine:
    """An Engine that observes each call's time to first token; everything else is ``inner``'s."""

    def __init__(self, inner: Engine, ttft) -> None:
        self._inner = inner
        self._ttft = ttft

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        # The inner generate validates at once (raising before anything is queued): keep that.
        return self._timed(self._inner.generate(request), time.perf_counter())

    async def _timed(self, stream, started: float):
        first = True
        try:
            async for item in stream:
                if first and (isinstance(item, TokenDelta)
                              or item.finish_reason in ("stop", "length")):
                    self._ttft.observe(time.perf_counter() - started)
                first = False
                yield item
        finally:
            await stream.aclose()  # a cancel must reach the engine's own stream at once
