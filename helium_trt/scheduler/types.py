"""Boundary types of the scheduler: what the runtime hands in and what it gets back (pure).

Everything is in tokens. A *call* is one LLM operator for one row; its prompt is known up to
``known_tokens`` before the run (literal text and row inputs) and has ``num_unknown_tokens``
more (placeholders filled by other calls' outputs) estimated from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PRIORITY = 35  # TensorRT-LLM's retention priority when nothing is said


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call to schedule. ``static_len`` leading known tokens are the same for all rows."""

    call_id: str
    op_id: str
    row: int
    known_tokens: tuple[int, ...]
    num_unknown_tokens: int = 0
    num_decode_tokens: int = 16
    deps: tuple[str, ...] = ()
    static_len: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.known_tokens) + self.num_unknown_tokens


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Knobs of one scheduling pass; the three switches are the per-request optimizations."""

    num_workers: int = 1
    batch_capacity: int = 16
    block_size: int = 16
    worker_capacity_blocks: int = 4096
    cache_aware: bool = True
    proactive_warming: bool = True
    retention_priorities: bool = True
    high_priority: int = 90
    low_priority: int = 10
    search_max_calls: int = 8


@dataclass(frozen=True, slots=True)
class RetentionSpan:
    """Prompt tokens [start, end) kept with ``priority`` (end None = to the end of the prompt)."""

    start: int
    end: int | None
    priority: int


@dataclass(frozen=True, slots=True)
class WarmPrefix:
    """A static prefix shared by two or more calls, prefilled once before its consumers run."""

    prefix_id: int
    tokens: tuple[int, ...]
    consumers: tuple[str, ...]
    worker: int = 0


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Where and when one call runs: ``rank`` orders ready calls (lower first)."""

    call_id: str
    rank: int
    worker: int
    prefix_id: int | None = None
    shared_len: int = 0


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """A schedule's cost on the simulated engine; ``total`` is what the search minimizes."""

    prefill_computed: int
    prefill_reused: int
    decode_steps: int

    @property
    def total(self) -> int:
        # NOTE: prefill tokens and decode steps are summed on one scale: on a CPU engine a
        # decode step of a batch costs about as much as prefilling a token of one sequence.
        return self.prefill_computed + self.decode_steps


@dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduler's output (like vLLM's SchedulerOutput: plain data, no behaviour)."""

    order: tuple[str, ...]
    calls: dict[str, CallPlan] = field(default_factory=dict)
    warm: tuple[WarmPrefix, ...] = ()
    estimate: CostEstimate | None = None
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
