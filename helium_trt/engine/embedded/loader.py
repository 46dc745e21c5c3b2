"""Load a Llama/Qwen2 model from a local Hugging Face directory (config.json + *.safetensors).

Tensors are read one at a time and converted to the compute dtype as they come, so the process
holds the converted model plus one tensor, never every file's contents.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from helium_trt.engine.embedded.model import LayerWeights, LlamaModel
from helium_trt.engine.embedded.model_config import MalformedModelError, ModelConfig


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> LlamaModel:
    """Read config and weights, check every tensor's shape, fuse q/k/v and gate/up."""
    config = ModelConfig.from_dir(model_dir)
    weights = _WeightReader(_index_safetensors(Path(model_dir)), dtype, str(model_dir))
    c = config
    embed = weights.take("model.embed_tokens.weight", (c.vocab_size, c.hidden_size))
    layers = [_load_layer(weights, config, i) for i in range(c.num_layers)]
    final_norm = weights.take("model.norm.weight", (c.hidden_size,))
    if weights.has("lm_head.weight") and not c.tie_word_embeddings:
        lm_head = weights.take("lm_head.weight", (c.vocab_size, c.hidden_size))
    else:
        lm_head = embed
    return LlamaModel(config, embed, layers, final_norm, lm_head)


def _index_safetensors(model_dir: Path) -> dict[str, str]:
    """Tensor name -> the file holding it, from the files' headers alone."""
    paths = sorted(model_dir.glob("*.safetensors"))
    if not paths:
        raise MalformedModelError(f"model directory {str(model_dir)!r} has no *.safetensors files")
    where: dict[str, str] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as handle:
                where.update(dict.fromkeys(handle.keys(), str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MalformedModelError(f"{path}: unreadable safetensors file ({exc})") from exc
    return where


class _WeightReader:
    """Reads named tensors one at a time, checking presence and shape (from the header, before
    reading any data), converting to the compute dtype.

    NOTE: the file is opened (memory-mapped) anew for every tensor, a header parse each time
    (~1 ms), and every tensor is copied out of the mapping, so the pages read leave the process
    with each mapping: one mapping held across the whole load (or tensors still backed by it)
    kept every page read resident next to the converted weights (SmolLM2: +538 MB in bfloat16).
    """

    def __init__(self, files: dict[str, str], dtype: torch.dtype, where: str):
        self.files = files
        self.dtype = dtype
        self.where = where

    def has(self, name: str) -> bool:
        return name in self.files

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        path = self.files.get(name)
        if path is None:
            raise MalformedModelError(f"{self.where}: weight {name!r} is missing")
        try:
            with safe_open(path, framework="pt") as handle:
                found = tuple(handle.get_slice(name).get_shape())
                tensor = handle.get_tensor(name) if found == shape else None
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MalformedModelError(
                f"{self.where}: weight {name!r} is unreadable ({exc})") from exc
        if tensor is None:
            raise MalformedModelError(
                f"{self.where}: weight {name!r} has shape {found}, expected {shape}")
        # copy: the weights own their memory; the file's mapping goes as the handle closes
        return tensor.to(self.dtype, memory_format=torch.contiguous_format, copy=True)


def _load_layer(weights: _WeightReader, c: ModelConfig, index: int) -> LayerWeights:
    prefix = f"model.layers.{index}."
    q_size, kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    q = weights.take(prefix + "self_attn.q_proj.weight", (q_size, c.hidden_size))
    k = weights.take(prefix + "self_attn.k_proj.weight", (kv_size, c.hidden_size))
    v = weights.take(prefix + "self_attn.v_proj.weight", (kv_size, c.hidden_size))
    qkv_bias = None
    if c.qkv_bias:
        qkv_bias = torch.cat([
            weights.take(prefix + "self_attn.q_proj.bias", (q_size,)),
            weights.take(prefix + "self_attn.k_proj.bias", (kv_size,)),
            weights.take(prefix + "self_attn.v_proj.bias", (kv_size,)),
        ])
    gate = weights.take(prefix + "mlp.gate_proj.weight", (c.intermediate_size, c.hidden_size))
    up = weights.take(prefix + "mlp.up_proj.weight", (c.intermediate_size, c.hidden_size))
    return LayerWeights(
        input_norm=weights.take(prefix + "input_layernorm.weight", (c.hidden_size,)),
        qkv=torch.cat([q, k, v]).contiguous(),
        qkv_bias=qkv_bias,
        o_proj=weights.take(prefix + "self_attn.o_proj.weight", (c.hidden_size, q_size)),
        post_norm=weights.take(prefix + "post_attention_layernorm.weight", (c.hidden_size,)),
        gate_up=torch.cat([gate, up]).contiguous(),
        down=weights.take(prefix + "mlp.down_proj.weight", (c.hidden_size, c.intermediate_size)),
    )
