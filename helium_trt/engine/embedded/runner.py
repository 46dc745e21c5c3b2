"""Model runner: turns a SchedulerOutput into tensors, runs one forward step, samples tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from helium_trt.engine.embedded.model import AttentionBatch, DecodeGroup, LlamaModel, PrefillSegment
from helium_trt.engine.embedded.sampler import make_generator, sample
from helium_trt.engine.embedded.scheduler import SchedulerOutput
from helium_trt.engine.embedded.sequence import Sequence


@dataclass(frozen=True, slots=True)
class StepResult:
    """Sampled next token per sequence that produced logits this step."""

    sampled: dict[int, int]  # id(seq) -> token id


@dataclass(slots=True)
class PreparedStep:
    """The tensors of one forward pass and which rows to sample for which sequences."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    batch: AttentionBatch
    sample_rows: torch.Tensor
    sample_seqs: list[Sequence]


# Padded key slots (sequences x longest context) per decode attention group. One group for a
# whole step gathered tens of MB of K/V per layer: 64 sequences of 300-1,100 tokens took 21 ms a
# layer, against 3 ms in groups of 8,192 slots whose gathers stay in the CPU caches.
DECODE_GROUP_SLOTS = 8192


class ModelRunner:
    def __init__(self, model: LlamaModel, num_blocks: int, block_size: int):
        self.model = model
        self.block_size = block_size
        self.kv_cache = model.allocate_kv_cache(num_blocks, block_size)
        self.device = model.device
        self._slot_offsets = torch.arange(block_size, device=self.device)

    @torch.inference_mode()
    def run(self, sched: SchedulerOutput) -> StepResult:
        for src, dst in sched.block_copies:
            self.kv_cache[:, :, :, dst].copy_(self.kv_cache[:, :, :, src])
        if not sched.prefills and not sched.decodes:
            return StepResult({})
        step = self._prepare(sched)
        hidden = self.model.forward(step.input_ids, step.positions, step.batch, self.kv_cache)
        sample_seqs = step.sample_seqs
        if not sample_seqs:
            return StepResult({})
        # NOTE: sampling runs on the CPU (per-request CPU generators keep seeded streams equal
        # on every device); off the CPU that moves [rows, vocab] floats once a step.
        logits = self.model.logits(hidden[step.sample_rows]).cpu()
        configs = [seq.request.sampling for seq in sample_seqs]
        generators = [self._generator(seq) for seq in sample_seqs]
        token_ids = sample(logits, configs, generators)
        return StepResult({id(seq): token for seq, token in zip(sample_seqs, token_ids)})

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        if seq.sampler_state is None and seq.request.sampling.temperature > 0.0:
            seq.sampler_state = make_generator(seq.request.sampling)
        return seq.sampler_state  # type: ignore[return-value]

    def _prepare(self, sched: SchedulerOutput) -> PreparedStep:
        ids: list[int] = []
        pos: list[int] = []
        slots: list[torch.Tensor] = []
        prefills: list[PrefillSegment] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        for chunk in sched.prefills:
            seq, start = chunk.seq, chunk.seq.num_computed_tokens
            end = start + chunk.num_tokens
            row = len(ids)
            ids.extend(seq.token_ids[start:end])
            pos.extend(range(start, end))
            context_blocks = self._tensor(seq.block_table[:-(-end // self.block_size)])
            slots.append(self._slots(seq.block_table, start, end))
            prefills.append(PrefillSegment(row, row + chunk.num_tokens, context_blocks, end))
            if chunk.completes_prompt and not seq.is_warm_only:
                sample_rows.append(row + chunk.num_tokens - 1)
                sample_seqs.append(seq)
        decodes = []
        for group_seqs in _decode_groups(sched.decodes, self.block_size):
            group, group_slots = self._decode_group(group_seqs, len(ids))
            decodes.append(group)
            for seq in group_seqs:
                sample_rows.append(len(ids))
                sample_seqs.append(seq)
                ids.append(seq.token_ids[-1])
                pos.append(len(seq.token_ids) - 1)
            slots.append(group_slots)
        batch = AttentionBatch(torch.cat(slots), prefills, decodes)
        return PreparedStep(self._tensor(ids), self._tensor(pos), batch, self._tensor(sample_rows),
                            sample_seqs)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, device=self.device)

    def _slots(self, block_table: list[int], start: int, end: int) -> torch.Tensor:
        """KV slots of positions [start, end)."""
        first, last = start // self.block_size, -(-end // self.block_size)
        blocks = self._tensor(block_table[first:last])
        slots = (blocks.unsqueeze(1) * self.block_size + self._slot_offsets).view(-1)
        offset = start - first * self.block_size
        return slots[offset:offset + end - start]

    def _decode_group(self, seqs: list[Sequence], start: int) -> tuple[DecodeGroup, torch.Tensor]:
        bs = self.block_size
        lengths = [len(seq.token_ids) for seq in seqs]
        num_blocks = -(-max(lengths) // bs)
        # Padding points at block 0: keys past a sequence's length are never attended to.
        table = self._tensor([seq.block_table[:num_blocks] + [0] * max(0, num_blocks - len(seq.block_table))
                              for seq in seqs])
        lengths_t = self._tensor(lengths)
        positions = lengths_t - 1
        new_slots = table.gather(1, (positions // bs).unsqueeze(1)).view(-1) * bs + positions % bs
        return DecodeGroup(start, table, lengths_t), new_slots


def _decode_groups(seqs: list[Sequence], block_size: int) -> list[list[Sequence]]:
    """Decoding sequences by context length, cut into groups of at most DECODE_GROUP_SLOTS
    padded key slots (a longer sequence gets a group of its own)."""
    groups: list[list[Sequence]] = []
    current: list[Sequence] = []
    for seq in sorted(seqs, key=lambda s: len(s.token_ids)):
        padded = -(-len(seq.token_ids) // block_size) * block_size
        if current and (len(current) + 1) * padded > DECODE_GROUP_SLOTS:
            groups.append(current)
            current = []
        current.append(seq)
    if current:
        groups.append(current)
    return groups

