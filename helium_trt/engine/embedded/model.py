"""Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) over a paged KV pool.

The model is plain tensors and functions rather than nn.Modules: a forward step is a flat batch
of tokens from many sequences (prefill chunks and decode tokens mixed), the projections run once
over all of them, and only attention looks at per-sequence structure (``AttentionBatch``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from helium_trt.engine.embedded import hugepages, native
from helium_trt.engine.embedded.model_config import ModelConfig


@dataclass(slots=True)
class PrefillSegment:
    """One sequence's prefill chunk: tokens ``[start, end)`` of the flat batch.

    The chunk attends causally to the first ``context_len`` tokens held in ``context_blocks``
    (cached prefix and the chunk itself, in position order): the chunk is the context's last
    ``end - start`` tokens.
    """

    start: int
    end: int
    context_blocks: torch.Tensor
    context_len: int


@dataclass(slots=True)
class DecodeGroup:
    """Decode tokens ``[start, start + B)`` of the flat batch, one per sequence (a step's decode
    tokens come in several groups of similar context length; see ``ModelRunner``).

    ``context_blocks`` is [B, num_blocks] (block tables, padded with any block id past a
    sequence's own); ``lengths`` [B] is each sequence's number of keys, its new token's included.
    """

    start: int
    context_blocks: torch.Tensor
    lengths: torch.Tensor


@dataclass(slots=True)
class AttentionBatch:
    """How the flat token batch maps onto sequences and KV slots for one forward step."""

    slot_mapping: torch.Tensor
    prefills: list[PrefillSegment]
    decodes: list[DecodeGroup]


@dataclass(slots=True)
class LayerWeights:
    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_proj: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


# Linear weights on the CPU are packed for oneDNN (see LlamaModel.prepare) unless
# $HELIUM_PACKED_WEIGHTS is 0; the batch size they are packed for (any batch works).
PACK_ENV = "HELIUM_PACKED_WEIGHTS"
PACK_BATCH_HINT = 8

# Queries per block of the CPU prefill attention: 32 and 64 measured alike, 128 and up slower
# (more masked scores computed, larger score blocks out of cache).
PREFILL_QUERY_BLOCK = 64


class LlamaModel:
    """Weights plus the forward pass.

    KV lives in ``kv_cache``: [layers, 2, kv_heads, blocks, block_size, dim]. Writes address
    single slots; reads gather whole blocks.

    NOTE: KV heads lead the block dimension so that a gather of a batch's blocks already has
    the [kv_heads, seqs, keys, dim] layout attention multiplies with: no transposing copy of
    the gathered context, at the price of a strided (per-head) gather.
    """

    def __init__(self, config: ModelConfig, embed: torch.Tensor, layers: list[LayerWeights],
                 final_norm: torch.Tensor, lm_head: torch.Tensor):
        self.config = config
        self.embed = embed
        self.layers = layers
        self.final_norm = final_norm
        self.lm_head = lm_head
        self.dtype = embed.dtype
        self._q_size = config.num_heads * config.head_dim
        self.device = embed.device
        self.cos, self.sin = (table.to(self.device) for table in _rope_tables(config, self.dtype))
        self._mask_cache: torch.Tensor | None = None
        self._linear: Callable[..., torch.Tensor] | None = None  # set at the first forward
        self._pack_lock = threading.Lock()

    def to(self, device: str | torch.device) -> LlamaModel:
        """This model with its weights on ``device`` (itself when they are there already).

        NOTE: one code path for every device: only attention picks its kernels by device (CPU:
        the blocked prefill and the native paged decode; elsewhere torch's SDPA and gather).
        """
        device = torch.device(device)
        if device == self.device:
            return self
        if self._linear is _packed_linear:
            raise ValueError("this model's weights are packed for the CPU; load it again to move it")
        layers = [LayerWeights(*(None if t is None else t.to(device) for t in
                                 (w.input_norm, w.qkv, w.qkv_bias, w.o_proj, w.post_norm, w.gate_up, w.down)))
                  for w in self.layers]
        embed = self.embed.to(device)
        lm_head = embed if self.lm_head is self.embed else self.lm_head.to(device)
        return LlamaModel(self.config, embed, layers, self.final_norm.to(device), lm_head)

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> torch.Tensor:
        c = self.config
        shape = (c.num_layers, 2, c.num_kv_heads, num_blocks, block_size, c.head_dim)
        return hugepages.zeros(shape, self.dtype, self.device)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                kv_cache: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, hidden] after the final norm, for the flat batch of N tokens."""
        c = self.config
        linear = self._linear or self.prepare()
        ops = self._elementwise_ops()
        hidden = F.embedding(input_ids, self.embed)
        rope = ops.rope_tables(self.cos, self.sin, positions)
        eps = c.rms_norm_eps
        residual = None  # added to hidden by the next norm
        for index, layer in enumerate(self.layers):
            hidden, normed = ops.add_rms_norm(hidden, residual, layer.input_norm, eps)
            qkv = linear(normed, layer.qkv, layer.qkv_bias)
            attn = self._attention(ops, qkv, rope, batch, kv_cache[index])
            hidden, normed = ops.add_rms_norm(hidden, linear(attn, layer.o_proj), layer.post_norm, eps)
            residual = linear(ops.silu_mul(linear(normed, layer.gate_up)), layer.down)
        return ops.add_rms_norm(hidden, residual, self.final_norm, eps)[1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        linear = self._linear or self.prepare()
        return linear(hidden, self.lm_head).float()

    def prepare(self) -> Callable[..., torch.Tensor]:
        """The linear layers' function; on the CPU first packs their weights for oneDNN and has
        the native kernels built (the engine calls it once the model is on its device, so no
        request waits for either; else the first forward does).

        NOTE: torch's F.linear hands oneDNN a plain weight, which it reorders into its blocked
        layout at every call; packed once, SmolLM2's linears of a decode step at 8 sequences
        took 14.3 ms instead of 22.8 (bf16; 1.9x at 1 row, 1.3x at 32, 1.06x at 512, outputs
        bit-identical). A packed weight is opaque (only oneDNN reads it): packing waits for
        ``to(device)``, and the tied lm_head gets its own copy.
        """
        with self._pack_lock:
            if self._linear is None:
                if self.device.type == "cpu":
                    native.paged_decode()  # compiles on a cold cache (seconds), then loads
                self._linear = F.linear
                if _packs_weights(self.device, self.dtype):
                    for layer in self.layers:
                        layer.qkv, layer.o_proj, layer.gate_up, layer.down = (
                            _pack(w) for w in (layer.qkv, layer.o_proj, layer.gate_up, layer.down))
                    self.lm_head = _pack(self.lm_head)
                    self._linear = _packed_linear
            return self._linear

    def _elementwise_ops(self) -> TorchOps | native.FusedOps:
        """The native fused bf16 ops where the attention kernels run too (CPU, one torch thread),
        else torch's."""
        c = self.config
        if self._native_allowed():
            fused = native.fused_ops()
            if fused is not None and fused.supports(self.dtype, c.hidden_size, c.intermediate_size):
                return fused
        return TORCH_OPS

    def _native_allowed(self) -> bool:
        """The native kernels run on the CPU while torch runs one thread: they are single-threaded,
        and with more threads torch's own ops parallelize."""
        return self.device.type == "cpu" and torch.get_num_threads() == 1

    def _attention(self, ops: TorchOps | native.FusedOps, qkv: torch.Tensor, rope: tuple,
                   batch: AttentionBatch, layer_kv: torch.Tensor) -> torch.Tensor:
        c = self.config
        num_tokens = qkv.shape[0]
        k_cache, v_cache = layer_kv[0], layer_kv[1]
        q = ops.rope_store(qkv, rope, batch.slot_mapping, k_cache, v_cache, c.num_heads)
        out = torch.empty(num_tokens, c.num_heads, c.head_dim, dtype=q.dtype, device=q.device)
        for seg in batch.prefills:
            out[seg.start:seg.end] = self._prefill_attention(q[seg.start:seg.end], seg, k_cache, v_cache)
        for group in batch.decodes:
            num_seqs = group.context_blocks.shape[0]
            out[group.start:group.start + num_seqs] = self._decode_attention(
                q[group.start:group.start + num_seqs], group, k_cache, v_cache)
        return out.view(num_tokens, self._q_size)

    def _prefill_attention(self, q: torch.Tensor, seg: PrefillSegment, k_cache: torch.Tensor,
                           v_cache: torch.Tensor) -> torch.Tensor:
        c = self.config
        if self._native_allowed():
            kernel = native.paged_prefill()
            if kernel is not None and kernel.supports(q.dtype, c.head_dim):
                return kernel(q, k_cache, v_cache, seg.context_blocks, seg.context_len, c.head_dim ** -0.5)
        shape = (c.num_kv_heads, -1, c.head_dim)
        k = k_cache.index_select(1, seg.context_blocks).view(shape)[:, :seg.context_len]
        v = v_cache.index_select(1, seg.context_blocks).view(shape)[:, :seg.context_len]
        first = seg.context_len - q.shape[0]  # position of the chunk's first token
        if q.device.type != "cpu":
            return _sdpa_prefill(q, k, v, first)
        return self._blocked_prefill(q, k, v, first)

    def _blocked_prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         first: int) -> torch.Tensor:
        """Causal attention of a chunk (q [n, heads, dim], its first token at position ``first``)
        over keys k, v [kv_heads, first + n, dim], PREFILL_QUERY_BLOCK queries at a time.

        NOTE: each block of queries reads only the keys up to its last query and masks only
        the square at its end, so fully masked key blocks cost nothing. torch's CPU
        scaled_dot_product_attention splits keys into 512-key blocks, so a 512-token chunk
        computed every masked score; this measured 1.3-2x faster per layer in bfloat16
        (docs/benchmarks.md). As in decode, the query heads sharing a KV head are the rows of
        one matmul. In bfloat16 the scores are rounded to bfloat16 before their float32 softmax
        (SDPA kept them in float32): max error against float64 about 2x SDPA's.
        """
        c = self.config
        n, group = q.shape[0], c.num_heads // c.num_kv_heads
        scaled = (q * c.head_dim ** -0.5).view(n, c.num_kv_heads, group, c.head_dim).permute(1, 2, 0, 3)
        out = torch.empty(c.num_kv_heads, group, n, c.head_dim, dtype=q.dtype, device=q.device)
        above_diagonal = self._above_diagonal(q.device)
        for a in range(0, n, PREFILL_QUERY_BLOCK):
            b = min(n, a + PREFILL_QUERY_BLOCK)
            rows, num_keys = b - a, first + b
            block_q = scaled[:, :, a:b].reshape(c.num_kv_heads, group * rows, c.head_dim)
            scores = torch.matmul(block_q, k[:, :num_keys].transpose(-1, -2))
            scores.view(c.num_kv_heads, group, rows, num_keys)[..., num_keys - rows:].masked_fill_(
                above_diagonal[:rows, :rows], float("-inf"))
            probs = torch.softmax(scores, dim=-1)  # bf16 in and out, float32 inside
            out[:, :, a:b] = torch.matmul(probs, v[:, :num_keys]).view(out[:, :, a:b].shape)
        return out.permute(2, 0, 1, 3).reshape(n, c.num_heads, c.head_dim)

    def _above_diagonal(self, device: torch.device) -> torch.Tensor:
        if self._mask_cache is None or self._mask_cache.device != device:
            self._mask_cache = torch.ones(PREFILL_QUERY_BLOCK, PREFILL_QUERY_BLOCK, dtype=torch.bool,
                                          device=device).triu(1)
        return self._mask_cache

    def _decode_attention(self, q: torch.Tensor, group: DecodeGroup, k_cache: torch.Tensor,
                          v_cache: torch.Tensor) -> torch.Tensor:
        c = self.config
        scale = c.head_dim ** -0.5
        if self._native_allowed():
            kernel = native.paged_decode()
            if kernel is not None and kernel.supports(q.dtype):
                return kernel(q, k_cache, v_cache, group.context_blocks, group.lengths, scale)
        return _decode_attention_by_gather(q, group.context_blocks, group.lengths, k_cache, v_cache,
                                           c.num_kv_heads, scale)


class TorchOps:
    """The decoder layer's elementwise steps as torch ops (every device and dtype); native.FusedOps
    has the same interface."""

    @staticmethod
    def add_rms_norm(hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is not None:
            hidden = hidden + residual
        return hidden, F.rms_norm(hidden, (hidden.shape[-1],), weight, eps)

    @staticmethod
    def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def rope_tables(cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> tuple:
        return cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)

    @staticmethod
    def rope_store(qkv: torch.Tensor, rope: tuple, slots: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, num_heads: int) -> torch.Tensor:
        num_kv_heads, _, _, dim = k_cache.shape
        n = qkv.shape[0]
        q, k, v = qkv.split([num_heads * dim, num_kv_heads * dim, num_kv_heads * dim], dim=-1)
        q = _apply_rope(q.view(n, num_heads, dim), *rope)
        k = _apply_rope(k.view(n, num_kv_heads, dim), *rope)
        slot_shape = (num_kv_heads, -1, dim)
        k_cache.view(slot_shape).index_copy_(1, slots, k.transpose(0, 1))
        v_cache.view(slot_shape).index_copy_(1, slots, v.view(n, num_kv_heads, dim).transpose(0, 1))
        return q


TORCH_OPS = TorchOps()


def _decode_attention_by_gather(q: torch.Tensor, tables: torch.Tensor, lengths: torch.Tensor,
                                k_cache: torch.Tensor, v_cache: torch.Tensor, num_kv_heads: int,
                                scale: float) -> torch.Tensor:
    """Decode attention with torch's kernels: every sequence's blocks gathered into a padded
    copy, keys past each length masked.

    NOTE: the query heads sharing one KV head become the "query rows" of that head, so
    grouped-query attention needs no copy of K/V per query head. Plain matmuls beat SDPA
    here: with a handful of query rows its CPU kernels mostly pay setup costs.
    """
    num_seqs, num_heads, dim = q.shape
    shape = (num_kv_heads, num_seqs, -1, dim)
    k = k_cache.index_select(1, tables.reshape(-1)).view(shape)  # [kv_heads, B, L, dim]
    v = v_cache.index_select(1, tables.reshape(-1)).view(shape)
    q = q.reshape(num_seqs, num_kv_heads, num_heads // num_kv_heads, dim).transpose(0, 1)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    keys = torch.arange(k.shape[2], device=q.device)
    scores.masked_fill_(keys >= lengths.view(num_seqs, 1, 1), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    out = torch.matmul(probs, v)  # [kv_heads, B, group, dim]
    return out.transpose(0, 1).reshape(num_seqs, num_heads, dim)


def _packs_weights(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or os.environ.get(PACK_ENV, "1") == "0":
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16
                                      and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_BATCH_HINT)


def _packed_linear(x: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _sdpa_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first: int) -> torch.Tensor:
    """Causal attention by torch's fused kernel (CUDA: flash / memory-efficient attention)."""
    n = q.shape[0]
    mask = None
    if first > 0:  # the chunk's queries see the whole cached prefix: causal from the bottom right
        positions = torch.arange(first + n, device=q.device)
        mask = positions <= positions[first:].unsqueeze(1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                         attn_mask=mask, is_causal=first == 0, enable_gqa=True)
    return out[0].transpose(0, 1)


def _rope_tables(config: ModelConfig, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    dim = config.head_dim
    # Computed in float32 exactly as transformers does, so logits match the reference closely.
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the Hugging Face Llama convention); x is [N, heads, dim], cos and sin
    [N, 1, dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
