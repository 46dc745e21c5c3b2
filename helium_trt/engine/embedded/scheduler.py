"""Continuous batching: which sequences run in the next step and how many tokens each.

Every step batches the decode token of each running sequence with prefill chunks (running
prefills first, then newly admitted requests), bounded by ``max_num_seqs``,
``max_num_batched_tokens`` and the KV blocks obtainable. When a decoding sequence needs a block
and none can be had, the lowest-priority, most recently arrived running sequence is preempted:
its blocks are released (its full blocks stay cached in the tree) and it waits to be prefilled
again, so no request is ever lost.

A waiting request whose prompt shares at least one whole block not yet computed with a running
prefill, or whose reusable prefix is that prefill's whole prompt, is held back until that
prefill has computed it (then it reuses the cached blocks, and copies a partly filled last
block): admitting both at once would compute the shared tokens twice. Requests behind it in
the queue may go first meanwhile. Imports no torch.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.embedded.sequence import Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512


@dataclass(slots=True)
class PrefillChunk:
    """Compute ``num_tokens`` tokens of ``seq`` starting at its ``num_computed_tokens``."""

    seq: Sequence
    num_tokens: int

    @property
    def completes_prompt(self) -> bool:
        return self.seq.num_computed_tokens + self.num_tokens == len(self.seq.token_ids)


@dataclass(slots=True)
class SchedulerOutput:
    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    # Prefill-only requests whose whole prompt was already cached: nothing to compute.
    finished_on_admission: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # KV block copies (source, destination) for partly matched prefix blocks, run first.
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    # Requests that cannot be admitted even with nothing else running: fail them, never wait.
    rejected: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.prefills or self.decodes or self.finished_on_admission or self.rejected)

    @property
    def num_tokens(self) -> int:
        return len(self.decodes) + sum(chunk.num_tokens for chunk in self.prefills)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVManager):
        self.config = config
        self.kv = kv
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._waiting: list[tuple[tuple[int, int], Sequence]] = []

    # ---- public API ------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_work(self) -> bool:
        return bool(self.running or self._waiting)

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        heapq.heappush(self._waiting, (seq.waiting_key, seq))

    def remove(self, seq: Sequence) -> None:
        """Take ``seq`` out of the queues (finished or cancelled) and release its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.kv.release(seq)
        elif seq.status is SeqStatus.WAITING:
            self._waiting = [item for item in self._waiting if item[1] is not seq]
            heapq.heapify(self._waiting)
        seq.status = SeqStatus.FINISHED

    def schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget -= self._schedule_decodes(out, now)
        for seq in self.running:
            if not seq.is_decoding and budget > 0 and seq not in out.preempted:
                num_tokens = min(seq.num_uncomputed_tokens, budget)
                out.prefills.append(PrefillChunk(seq, num_tokens))
                budget -= num_tokens
        self._admit_waiting(out, budget, now)
        return out

    # ---- private helpers ---------------------------------------------------------------------

    def _schedule_decodes(self, out: SchedulerOutput, now: float) -> int:
        decoding = sorted((s for s in self.running if s.is_decoding), key=lambda s: s.waiting_key)
        for seq in decoding:
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted earlier in this loop
            while not self.kv.try_grow(seq, now):
                victim = self._pick_victim()
                self._preempt(victim, out)
                if victim is seq:
                    break
            if seq.status is SeqStatus.RUNNING:
                out.decodes.append(seq)
        return len(out.decodes)

    def _admit_waiting(self, out: SchedulerOutput, budget: int, now: float) -> None:
        held_back: list[tuple[tuple[int, int], Sequence]] = []
        while self._waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self._waiting[0][1]
            if self._shares_uncomputed_prefix(seq):
                held_back.append(heapq.heappop(self._waiting))
                continue
            if not self.kv.try_admit(seq, now):
                if self.running:
                    break  # head-of-line waits: admitting smaller ones first would starve it
                # Nothing runs, so nothing will free a block: waiting would never end.
                heapq.heappop(self._waiting)
                out.rejected.append(seq)
                continue
            heapq.heappop(self._waiting)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            if seq.pending_copy is not None:
                out.block_copies.append(seq.pending_copy)
                seq.pending_copy = None
            if seq.num_uncomputed_tokens == 0:
                out.finished_on_admission.append(seq)
                continue
            num_tokens = min(seq.num_uncomputed_tokens, budget)
            out.prefills.append(PrefillChunk(seq, num_tokens))
            budget -= num_tokens
        for item in held_back:
            heapq.heappush(self._waiting, item)

    def _shares_uncomputed_prefix(self, seq: Sequence) -> bool:
        """True when a running prefill is about to compute and cache part of ``seq``'s prefix:
        a whole block, or the tail of its prompt (cached once that prompt is computed)."""
        if not self.kv.shares_prefixes(seq):
            return False
        return any(self._will_cache_for(seq, other) for other in self.running
                   if not other.is_decoding and self.kv.shares_prefixes(other))

    def _will_cache_for(self, seq: Sequence, other: Sequence) -> bool:
        bs = self.kv.block_size
        tokens, theirs = seq.token_ids, other.token_ids
        start = other.num_computed_tokens // bs * bs  # its computed whole blocks are cached
        end = start + bs  # its next whole block: equal to ours, and so is everything before it?
        if end <= len(tokens) and end <= len(theirs) and tokens[:end] == theirs[:end]:
            # Another tenant's blocks are never shared, so not worth waiting for.
            return self.kv.same_block_keys(seq, other, end // bs)
        if other.num_output_tokens:
            return False  # prefilling again after a preemption: it caches whole blocks only
        # Less than a block to gain: only when all we would reuse is its prompt (identical
        # prompts, forks); it is at most a block from computing that.
        end = min(len(tokens) if seq.is_warm_only else len(tokens) - 1, other.num_prompt_tokens)
        return (end > start and tokens[:end] == theirs[:end]
                and self.kv.same_block_keys(seq, other, -(-end // bs)))

    def _pick_victim(self) -> Sequence:
        return max(self.running, key=lambda s: s.waiting_key)

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.kv.release(seq)
        seq.num_preemptions += 1
        self.num_preemptions += 1
        out.preempted.append(seq)
        if seq in out.decodes:
            out.decodes.remove(seq)
        self.add(seq)
