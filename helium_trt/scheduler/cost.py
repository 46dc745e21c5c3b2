"""Cost model in tokens: prefill not already cached, decode steps in batches, observed lengths (pure).

``simulate`` replays an order on one simulated cache per worker. Decode is charged per *wave*:
consecutive calls on a worker share a batch (up to ``batch_capacity``) unless one depends on
another in the same wave, and a wave costs its longest decode.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from helium_trt.scheduler.prefix_index import pack
from helium_trt.scheduler.simulate import SimulatedCache, block_keys
from helium_trt.scheduler.types import CallSpec, CostEstimate, SchedulerConfig, WarmPrefix


@dataclass
class OutputLengths:
    """Observed output lengths per operator, refining ``max_tokens`` as calls finish.

    Kept by the runtime across requests (it is plain data, no clock).
    """

    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def observe(self, op_id: str, num_tokens: int) -> None:
        self.totals[op_id] += num_tokens
        self.counts[op_id] += 1

    def estimate(self, op_id: str, max_tokens: int) -> int:
        """Mean observed length (capped by ``max_tokens``), else ``max_tokens``."""
        n = self.counts.get(op_id, 0)
        if n == 0:
            return max_tokens
        return min(max_tokens, max(1, round(self.totals[op_id] / n)))


def call_block_keys(calls: Mapping[str, CallSpec], block_size: int,
                    packed: Mapping[str, bytes] | None = None) -> dict[str, list[int]]:
    """Block keys of each call's prompt as the simulation sees it, for placement and estimate.

    Known tokens are keyed by ``block_keys``; the run-time part is unique to the call, so a
    block holding any of it gets a key of its own (from call and block number) that matches
    nothing else. Rows of one operator share a static prefix: its whole blocks are hashed
    once, found by their ``pack``ed bytes (``packed``: each call's known tokens, where the
    caller has them already).
    """
    static_keys: dict[bytes, list[int]] = {}
    out: dict[str, list[int]] = {}
    for index, (cid, spec) in enumerate(calls.items()):
        known = spec.known_tokens
        n = min(spec.static_len, len(known))
        n -= n % block_size
        head = packed[cid][:4 * n] if packed is not None else pack(known[:n])
        keys = static_keys.get(head)
        if keys is None:
            keys = static_keys[head] = block_keys(known[:n], block_size)
        keys = block_keys(known, block_size, n, keys)
        num_blocks = (len(known) + spec.num_unknown_tokens) // block_size
        # NOTE: negative ints apart from each other by call, as unlikely to equal a hashed key
        # as two hashes are to collide, and nothing to hash.
        base = -(index + 1) << 32
        keys.extend(base - j for j in range(len(keys), num_blocks))
        out[cid] = keys
    return out


def simulate(calls: Mapping[str, CallSpec], order: Sequence[str], config: SchedulerConfig,
             placement: Mapping[str, int] | None = None,
             warm: Sequence[WarmPrefix] = (),
             caches: Sequence[SimulatedCache] | None = None,
             keys: Mapping[str, Sequence[int]] | None = None) -> CostEstimate:
    """Cost of running ``order`` (warm prefixes first) on fresh or given simulated caches.

    ``keys`` are the calls' ``call_block_keys`` where the caller has them already.
    """
    if caches is None:
        caches = [SimulatedCache(config.block_size, config.worker_capacity_blocks)
                  for _ in range(config.num_workers)]
    if keys is None:
        keys = call_block_keys(calls, config.block_size)
    computed = reused = 0
    for prefix in warm:
        computed += len(prefix.tokens) - caches[prefix.worker].insert(prefix.tokens)
    waves: dict[int, list[list[str]]] = defaultdict(lambda: [[]])
    for cid in order:
        spec = calls[cid]
        worker = placement[cid] if placement else 0
        num_tokens = spec.num_prompt_tokens
        hit = min(caches[worker].insert_keys(keys[cid]), max(num_tokens - 1, 0))
        reused += hit
        computed += num_tokens - hit
        _add_to_wave(waves[worker], spec, config.batch_capacity)
    decode_steps = sum(max((calls[c].num_decode_tokens for c in wave), default=0)
                       for worker_waves in waves.values() for wave in worker_waves)
    return CostEstimate(computed, reused, decode_steps)


def _add_to_wave(waves: list[list[str]], spec: CallSpec, capacity: int) -> None:
    current = waves[-1]
    if len(current) >= capacity or any(dep in current for dep in spec.deps):
        waves.append([spec.call_id])
    else:
        current.append(spec.call_id)
