"""The systems a benchmark compares: helium, its ablations, and workflow-unaware baselines.

Every system runs on the same engine and model. Each is a set of runtime options, an ordering
policy (the runtime's own, OpWise or QueryWise) and an engine setting (prefix cache on or off, a
KV cache sized to a fraction of the working set, or the vLLM peer).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from helium_trt.bench.engines import LEAST_LOADED, ROUND_ROBIN
from helium_trt.runtime.options import ALL_RULES, RunOptions, naive_options

RUNTIME_ORDER = "runtime"
OPWISE = "opwise"
QUERYWISE = "querywise"

# Baselines every system's speed-up is reported against (when they ran).
BASELINES = ("call-level", "call-level round-robin", "call-level least-loaded", "opwise",
             "querywise", "naive", "vllm")
HELIUM = "helium"


@dataclass(frozen=True, slots=True)
class System:
    """``kv_fraction``: KV cache blocks = this fraction of the working set (trie minimum).
    ``balancer``: with several workers, they sit behind one load balancer with this policy
    (bench.engines.Balancer) instead of being handed to the runtime one by one."""

    name: str
    description: str
    options: RunOptions = field(default_factory=RunOptions)
    order: str = RUNTIME_ORDER
    prefix_caching: bool = True
    kv_fraction: float | None = None
    engine: str = "embedded"
    balancer: str | None = None


# A workflow-unaware orchestrator (LangGraph / AgentScope style): every LLM call is issued as
# soon as its inputs are ready, on an engine whose prefix cache is plain LRU.
CALL_LEVEL_OPTIONS = RunOptions(
    disabled_rules=ALL_RULES, prompt_cache=False, cache_aware_scheduling=False,
    proactive_warming=False, retention_priorities=False, kv_prefix_reuse=True)

# OpWise / QueryWise keep helium's other optimizations and replace only the order; the gate
# (not the dispatcher) bounds what runs, so every ready call must reach it.
_ORDERED_OPTIONS = RunOptions(cache_aware_scheduling=False, max_inflight=4096)


def all_systems() -> tuple[System, ...]:
    h = RunOptions()
    return (
        System(HELIUM, "all optimizations on", h),
        System("helium -rules", "plan rewrite rules off (no pruning, merging, folding)",
               replace(h, disabled_rules=ALL_RULES)),
        System("helium -prompt-cache", "prompt-result cache off", replace(h, prompt_cache=False)),
        System("helium -cache-aware", "cache-aware order off (plan order)",
               replace(h, cache_aware_scheduling=False)),
        System("helium -warming", "proactive warming of static prefixes off",
               replace(h, proactive_warming=False)),
        System("helium -retention", "retention priorities off (plain LRU eviction)",
               replace(h, retention_priorities=False)),
        System("helium @half-kv", "all on, KV cache at half the working set", h, kv_fraction=0.5),
        System("call-level", "workflow-unaware orchestrator, engine LRU prefix cache",
               CALL_LEVEL_OPTIONS),
        System("call-level @half-kv", "call-level with the KV cache at half the working set",
               CALL_LEVEL_OPTIONS, kv_fraction=0.5),
        System(OPWISE, "one operator at a time over all rows", _ORDERED_OPTIONS, order=OPWISE),
        System(QUERYWISE, "one row at a time through the whole workflow", _ORDERED_OPTIONS,
               order=QUERYWISE),
        System("call-level round-robin", "call-level behind a round-robin balancer over the "
               "workers (bench --workers)", CALL_LEVEL_OPTIONS, balancer=ROUND_ROBIN),
        System("call-level least-loaded", "call-level behind a balancer sending each call to "
               "the worker with the fewest calls in flight (bench --workers)", CALL_LEVEL_OPTIONS,
               balancer=LEAST_LOADED),
        System("naive", "one call at a time, no prefix cache", naive_options(),
               prefix_caching=False),
        System("vllm", "vLLM (automatic prefix caching), workflow-unaware orchestrator",
               CALL_LEVEL_OPTIONS, engine="vllm"),
    )


def select_systems(names: list[str] | None, with_vllm: bool,
                   num_workers: int = 1) -> tuple[System, ...]:
    """The systems to run: ``names`` (all by default, the balancer baselines only with several
    workers: on one they are call-level)."""
    systems = [s for s in all_systems() if (with_vllm or s.engine != "vllm")
               and (num_workers > 1 or s.balancer is None or names)]
    if names:
        known = {s.name for s in all_systems()}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}; known: {sorted(known)}")
        systems = [s for s in systems if s.name in names]
    return tuple(systems)
