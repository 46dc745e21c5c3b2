"""Proactive warm-up list and retention priorities (pure).

A warm prefix is the deepest static token prefix that two or more calls share (block-aligned,
since engines reuse whole blocks). It is prefilled once before its consumers, held with a high
retention priority while consumers remain, and released to the default priority by the last
consumer's request. One-off suffixes and decoded tokens get a low priority.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from helium_trt.scheduler.prefix_index import adjacent_common_packed, pack
from helium_trt.scheduler.types import (
    DEFAULT_PRIORITY, CallSpec, RetentionSpan, SchedulerConfig, WarmPrefix,
)


def warm_prefixes(calls: Mapping[str, CallSpec], order: Sequence[str],
                  block_size: int) -> tuple[WarmPrefix, ...]:
    """For each call, the deepest block-aligned static prefix shared with another call.

    Listed in the order their first consumer runs.
    """
    statics = {cid: calls[cid].known_tokens[:calls[cid].static_len] for cid in order}
    # Rows of one operator share a static prefix: rank each distinct one once. An equal twin
    # shares all of it; otherwise the deepest shared prefix is with a sorted neighbour.
    counts = Counter(statics.values())
    packed = {tokens: pack(tokens) for tokens in counts}
    ranked = sorted(counts, key=packed.__getitem__)
    best = {tokens: len(tokens) if n > 1 else 0 for tokens, n in counts.items()}
    shared = adjacent_common_packed([packed[tokens] for tokens in ranked])
    for a, b, n in zip(ranked, ranked[1:], shared):
        best[a], best[b] = max(best[a], n), max(best[b], n)
    deepest = {tokens: tokens[:n - n % block_size] for tokens, n in best.items()}
    chosen: dict[tuple[int, ...], list[str]] = {}
    for cid in order:
        prefix = deepest[statics[cid]]
        if len(prefix) >= block_size:
            chosen.setdefault(prefix, []).append(cid)
    return tuple(WarmPrefix(i, tokens, tuple(consumers))
                 for i, (tokens, consumers) in enumerate(chosen.items()))


def retention_spans(shared_len: int, is_last_consumer: bool,
                    config: SchedulerConfig) -> tuple[tuple[RetentionSpan, ...], int | None]:
    """Retention for one request: (prompt spans, decode priority); ((), None) when switched off.

    The shared prefix stays high while later consumers need it; the last consumer sets it back
    to the default so the engine may evict it once nothing in the plan reads it.
    """
    if not config.retention_priorities:
        return (), None
    spans = []
    if shared_len > 0:
        priority = DEFAULT_PRIORITY if is_last_consumer else config.high_priority
        spans.append(RetentionSpan(0, shared_len, priority))
    spans.append(RetentionSpan(shared_len, None, config.low_priority))
    return tuple(spans), config.low_priority


def warm_spans(prefix: WarmPrefix, config: SchedulerConfig) -> tuple[RetentionSpan, ...]:
    if not config.retention_priorities:
        return ()
    return (RetentionSpan(0, len(prefix.tokens), config.high_priority),)

