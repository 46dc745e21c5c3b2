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


def warm_prefixes(calls: Mapping[str, CallSpec], order: Sequence[str], block_size: int,
                  packed: Mapping[str, bytes] | None = None) -> tuple[WarmPrefix, ...]:
    """For each call, the deepest block-aligned static prefix shared with another call.

    Listed in the order their first consumer runs. ``packed`` holds each call's known tokens
    ``pack``ed, where the caller has them already.
    """
    if packed is None:
        packed = {cid: pack(calls[cid].known_tokens) for cid in order}
    # NOTE: prefixes as packed bytes: equal and sorted exactly as the tokens, but sliced,
    # hashed and compared in C (tuples were most of this function's time).
    statics = {cid: packed[cid][:4 * calls[cid].static_len] for cid in order}
    # Rows of one operator share a static prefix: rank each distinct one once. An equal twin
    # shares all of it; otherwise the deepest shared prefix is with a sorted neighbour.
    counts = Counter(statics.values())
    ranked = sorted(counts)
    best = {static: len(static) // 4 if n > 1 else 0 for static, n in counts.items()}
    for a, b, n in zip(ranked, ranked[1:], adjacent_common_packed(ranked)):
        best[a], best[b] = max(best[a], n), max(best[b], n)
    deepest = {static: static[:4 * (n - n % block_size)] for static, n in best.items()}
    chosen: dict[bytes, list[str]] = {}
    for cid in order:
        prefix = deepest[statics[cid]]
        if len(prefix) >= 4 * block_size:
            chosen.setdefault(prefix, []).append(cid)
    return tuple(WarmPrefix(i, calls[consumers[0]].known_tokens[:len(prefix) // 4],
                            tuple(consumers))
                 for i, (prefix, consumers) in enumerate(chosen.items()))


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

