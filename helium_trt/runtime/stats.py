"""Run statistics accumulated while a workflow runs (turned into a RunStats event at the end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from helium_trt.runtime.events import RunStats
from helium_trt.scheduler import prefill_minimum


@dataclass
class StatsAccumulator:
    num_rows: int = 0
    num_llm_calls: int = 0
    num_result_cache_hits: int = 0
    calls_computed: int = 0
    calls_reused: int = 0
    warm_computed: int = 0
    decode_tokens: int = 0
    num_rows_failed: int = 0
    planning_ms: float = 0.0
    num_ops_before: int = 0
    num_ops_after: int = 0
    # (prompt, output token ids) of every engine call, for the prefill lower bound.
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    num_shared_calls: int = 0
    # Keys of the deterministic calls asked for (single_flight.FlightKey); the others each count.
    distinct_calls: set = field(default_factory=set)
    num_unkeyed_calls: int = 0

    def note_call(self, key) -> None:
        """An LLM call reached the dispatcher; ``key`` None: it can share with no other."""
        if key is None:
            self.num_unkeyed_calls += 1
        else:
            self.distinct_calls.add(key)

    def record_call(self, prompt: tuple[int, ...], computed: int, reused: int, decoded: int,
                    output: Sequence[int] = ()) -> None:
        self.num_llm_calls += 1
        self.calls.append((prompt, tuple(output)))
        self.calls_computed += computed
        self.calls_reused += reused
        self.decode_tokens += decoded

    def finish(self, wall_ms: float) -> RunStats:
        """``kv_hit_rate`` = reused / prompt tokens of the calls (warm-ups excluded)."""
        num_prompt = self.calls_computed + self.calls_reused
        return RunStats(
            num_rows=self.num_rows, num_llm_calls=self.num_llm_calls,
            num_result_cache_hits=self.num_result_cache_hits,
            prefill_tokens_computed=self.calls_computed + self.warm_computed,
            prefill_tokens_reused=self.calls_reused,
            prefill_tokens_minimum=prefill_minimum(self.calls),
            decode_tokens=self.decode_tokens,
            kv_hit_rate=self.calls_reused / num_prompt if num_prompt else 0.0,
            planning_ms=self.planning_ms, wall_ms=wall_ms,
            num_ops_before=self.num_ops_before, num_ops_after=self.num_ops_after,
            warm_tokens_computed=self.warm_computed, num_rows_failed=self.num_rows_failed,
            num_distinct_prompts=len(self.distinct_calls) + self.num_unkeyed_calls,
            num_shared_calls=self.num_shared_calls,
        )
