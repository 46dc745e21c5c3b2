"""Placement of a ready call at dispatch time (pure): the worker where it finishes the least work.

The plan places calls before any has run (placement.py); at dispatch time the runtime knows
more: what each engine really holds (``num_resident_tokens``), which prompts are in flight there
(cached once their prefill runs), and how much work each worker still has. A ready
call goes to the worker minimising

    its uncached prefill there + that worker's queued prefill + queued decode
    + the decode steps it would add there

in prefill-token equivalents (``StepCosts``).

NOTE: queued prefill counts in full. Plan-time placement divided queued work by the batch
capacity, so prefill looked free and (Trading, 1 row, 2 workers) one worker was left idle for a
third of the run: prefill is compute bound, a batch makes it no cheaper per token. Decode is
charged per engine step, which costs about the same whether one sequence or eight decode in it;
a call whose decode ends before the worker's longest one adds no steps, only its sequence cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class StepCosts:
    """Engine work relative to prefilling one token.

    Defaults from `helium-trt bench-engine` (SmolLM2-135M, embedded engine, bf16, this 2-core
    CPU): ~0.7 ms per prefill token, a decode step ~16 ms plus ~0.6 ms per sequence in it.
    """

    decode_step: float = 24.0
    decode_sequence: float = 1.0


@dataclass(frozen=True, slots=True)
class WorkerQueue:
    """Work placed on one worker and not done yet, by every run sharing it."""

    num_prefill_tokens: int = 0  # prompt tokens still to compute
    num_decode_tokens: int = 0  # tokens still to generate, all sequences together
    max_decode_tokens: int = 0  # the longest generation left: the decode steps left


def queued_work(queue: WorkerQueue, costs: StepCosts) -> float:
    """``queue``'s work in prefill-token equivalents."""
    return (queue.num_prefill_tokens + costs.decode_step * queue.max_decode_tokens
            + costs.decode_sequence * queue.num_decode_tokens)


def placement_cost(num_uncached: int, num_decode: int, queue: WorkerQueue,
                   costs: StepCosts) -> float:
    """The worker's work once a call with ``num_uncached`` prompt tokens to compute there and
    ``num_decode`` tokens to generate joins ``queue``."""
    added_steps = max(0, num_decode - queue.max_decode_tokens)
    return (queued_work(queue, costs) + num_uncached + costs.decode_step * added_steps
            + costs.decode_sequence * num_decode)


def choose_worker(num_uncached: Sequence[int], num_decode: int, queues: Sequence[WorkerQueue],
                  costs: StepCosts = StepCosts()) -> int:
    """The worker of least ``placement_cost`` (the lowest index among equals)."""
    return min(range(len(queues)),
               key=lambda w: (placement_cost(num_uncached[w], num_decode, queues[w], costs), w))


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token tuples.

    NOTE: a bisection over slice comparisons (each a C loop) rather than a Python loop per
    token: a 2,000-token prompt against each call queued on a worker, at every placement.
    """
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def num_pending_tokens(prompt: Sequence[int], queued: Sequence[Sequence[int]],
                       block_size: int) -> int:
    """Leading whole blocks of ``prompt`` that a prompt in flight on the worker will have
    cached by the time this one is prefilled (engines reuse whole blocks only)."""
    best = max((common_prefix_len(prompt, q) for q in queued), default=0)
    return best - best % block_size
