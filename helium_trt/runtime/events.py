"""Events a workflow run streams, as plain dataclasses (1:1 with helium.v1.RunEvent's oneof)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True, slots=True)
class OpStarted:
    op_id: str
    row: int


@dataclass(frozen=True, slots=True)
class TokenDelta:
    op_id: str
    row: int
    text: str
    item: int = 0


@dataclass(frozen=True, slots=True)
class OpFinished:
    """``output`` is text; lists and conversations are JSON."""

    op_id: str
    row: int
    output: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    from_result_cache: bool = False
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RowOutput:
    row: int
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunError:
    """A failure of one row (``row`` >= 0) or of the whole run (``row`` = -1).

    ``code`` is a helium.v1.ErrorCode name without prefix: "INVALID_ARGUMENT", "UNAVAILABLE", ...
    """

    code: str
    message: str
    op_id: str = ""
    row: int = -1


@dataclass(frozen=True, slots=True)
class RunStats:
    """Totals of one run; ``prefill_tokens_computed`` includes ``warm_tokens_computed``.

    ``num_llm_calls`` are the engine calls the run made; ``num_distinct_prompts`` the distinct
    calls it asked for (model, prompt tokens and a deterministic config; every other call counts
    on its own), answered by the result cache aside. ``num_shared_calls`` joined an identical
    call in flight, of this run or another of the tenant's, instead of calling an engine.
    """

    num_rows: int = 0
    num_llm_calls: int = 0
    num_result_cache_hits: int = 0
    prefill_tokens_computed: int = 0
    prefill_tokens_reused: int = 0
    prefill_tokens_minimum: int = 0
    decode_tokens: int = 0
    kv_hit_rate: float = 0.0
    planning_ms: float = 0.0
    wall_ms: float = 0.0
    num_ops_before: int = 0
    num_ops_after: int = 0
    warm_tokens_computed: int = 0
    num_rows_failed: int = 0
    num_distinct_prompts: int = 0
    num_shared_calls: int = 0


Event = Union[OpStarted, TokenDelta, OpFinished, RowOutput, RunError, RunStats]
