"""The TensorRT-LLM backend's KV-cache block and request gauges, as the CPU stand-in publishes them.

Family, label and label-value names are those of tensorrtllm_backend's custom metrics reporter,
so a dashboard, alert or router that reads a GPU node's
``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"}`` reads the stand-in unchanged.
Every series carries the ``model`` and ``version`` labels the backend adds. Triton-free: the model
adapter passes ``pb_utils.MetricFamily`` in (any factory with the same shape does for tests).

What the stand-in's values mean, in the backend's terms:

- ``used`` blocks are referenced by requests, ``free`` = ``max`` - ``used`` includes blocks that
  only the prefix cache holds (TensorRT-LLM also counts reusable cached blocks as free);
  ``reused`` counts the full blocks that requests found cached since the server started;
  ``fraction`` = ``used`` / ``max``.
- ``active`` and ``scheduled`` are the engine's running requests (every running request takes
  part in each step), ``context`` those still computing their prompt, ``waiting`` those not yet
  admitted, ``max`` the most that can run at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

KV_CACHE_BLOCK_FAMILY = "nv_trt_llm_kv_cache_block_metrics"
KV_CACHE_BLOCK_LABEL = "kv_cache_block_type"
REQUEST_FAMILY = "nv_trt_llm_request_metrics"
REQUEST_LABEL = "request_type"
_DESCRIPTIONS = {KV_CACHE_BLOCK_FAMILY: "TRT LLM KV cache block metrics", REQUEST_FAMILY: "TRT LLM request metrics"}
_LABELS = {KV_CACHE_BLOCK_FAMILY: KV_CACHE_BLOCK_LABEL, REQUEST_FAMILY: REQUEST_LABEL}

# (name, description) -> a family whose ``Metric(labels=...)`` returns a gauge with ``set(value)``:
# pb_utils.MetricFamily with kind GAUGE, bound by the model adapter.
NewGaugeFamily = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class KvCacheBlockStats:
    """``kv_cache_block_type`` values; ``fraction`` is derived."""

    max: int
    free: int
    used: int
    tokens_per: int
    reused: int

    def values(self) -> dict[str, float]:
        fraction = self.used / self.max if self.max > 0 else 0.0
        return {**asdict(self), "fraction": fraction}


@dataclass(frozen=True, slots=True)
class RequestStats:
    """``request_type`` values."""

    active: int
    max: int
    scheduled: int
    context: int
    waiting: int

    def values(self) -> dict[str, float]:
        return asdict(self)


class TrtllmGauges:
    """The two gauge families for one model version; ``publish`` sets the values that changed.

    NOTE: the families stay referenced here for the model's lifetime: Triton removes a family's
    series once its Python object is garbage collected.
    """

    def __init__(self, new_family: NewGaugeFamily, model_name: str, model_version: str):
        self._labels = {"model": model_name, "version": str(model_version)}
        self._families = {name: new_family(name, description) for name, description in _DESCRIPTIONS.items()}
        self._gauges: dict[tuple[str, str], Any] = {}
        self._last: dict[tuple[str, str], float] = {}

    def publish(self, kv_blocks: KvCacheBlockStats, requests: RequestStats) -> None:
        self._publish(KV_CACHE_BLOCK_FAMILY, kv_blocks.values())
        self._publish(REQUEST_FAMILY, requests.values())

    def _publish(self, family: str, values: Mapping[str, float]) -> None:
        for label_value, value in values.items():
            key = (family, label_value)
            if self._last.get(key) == value:
                continue
            gauge = self._gauges.get(key)
            if gauge is None:
                labels = {**self._labels, _LABELS[family]: label_value}
                gauge = self._gauges[key] = self._families[family].Metric(labels=labels)
            gauge.set(float(value))
            self._last[key] = value


def engine_stats(engine, num_reused_blocks: int) -> tuple[KvCacheBlockStats, RequestStats]:
    """The gauges' values for an EmbeddedEngine (its KV pool and ``load()``) and the count of
    blocks reused so far, which the stand-in keeps from each finished request."""
    num_blocks, num_free = engine.info.num_blocks, engine.num_free_blocks()
    kv_blocks = KvCacheBlockStats(max=num_blocks, free=num_free, used=num_blocks - num_free,
                                  tokens_per=engine.info.block_size, reused=num_reused_blocks)
    load = engine.load()
    requests = RequestStats(active=load.num_running, max=load.max_num_running, scheduled=load.num_running,
                            context=load.num_prefilling, waiting=load.num_waiting)
    return kv_blocks, requests
