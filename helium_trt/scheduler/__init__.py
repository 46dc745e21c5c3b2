"""Cache-aware scheduling of LLM calls (pure): cost model, order, warm list, placement."""

from helium_trt.scheduler.cost import OutputLengths, simulate
from helium_trt.scheduler.order import chain_depths, fifo_order, greedy_order
from helium_trt.scheduler.schedule import build_schedule
from helium_trt.scheduler.search import exhaustive_search
from helium_trt.scheduler.simulate import SimulatedCache, prefill_minimum, trie_size
from helium_trt.scheduler.types import (
    DEFAULT_PRIORITY, CallPlan, CallSpec, CostEstimate, RetentionSpan, Schedule,
    SchedulerConfig, WarmPrefix,
)
from helium_trt.scheduler.warm import retention_spans, warm_prefixes, warm_spans

__all__ = [
    "DEFAULT_PRIORITY", "CallPlan", "CallSpec", "CostEstimate", "OutputLengths", "RetentionSpan",
    "Schedule", "SchedulerConfig", "SimulatedCache", "WarmPrefix", "build_schedule",
    "chain_depths", "exhaustive_search", "fifo_order", "greedy_order", "prefill_minimum",
    "retention_spans", "simulate", "trie_size", "warm_prefixes", "warm_spans",
]
