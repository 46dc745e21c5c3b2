"""Load a Llama/Qwen2 model from a local Hugging Face directory (config.json + *.safetensors)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from helium_trt.engine.model import LayerWeights, LlamaModel
from helium_trt.engine.model_config import MalformedModelError, ModelConfig


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> LlamaModel:
    """Read config and weights, check every tensor's shape, fuse q/k/v and gate/up."""
    config = ModelConfig.from_dir(model_dir)
    tensors = _read_safetensors(Path(model_dir))
    weights = _WeightReader(tensors, dtype, str(model_dir))
    c = config
    embed = weights.take("model.embed_tokens.weight", (c.vocab_size, c.hidden_size))
    layers = [_load_layer(weights, config, i) for i in range(c.num_layers)]
    final_norm = weights.take("model.norm.weight", (c.hidden_size,))
    if "lm_head.weight" in tensors and not c.tie_word_embeddings:
        lm_head = weights.take("lm_head.weight", (c.vocab_size, c.hidden_size))
    else:
        lm_head = embed
    return LlamaModel(config, embed, layers, final_norm, lm_head)


def _read_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MalformedModelError(f"model directory {str(model_dir)!r} has no *.safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MalformedModelError(f"{path}: unreadable safetensors file ({exc})") from exc
    return tensors


class _WeightReader:
    """Fetches named tensors, checking presence and shape, converting to the compute dtype."""

    def __init__(self, tensors: dict[str, torch.Tensor], dtype: torch.dtype, where: str):
        self.tensors = tensors
        self.dtype = dtype
        self.where = where

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise MalformedModelError(f"{self.where}: weight {name!r} is missing")
        if tuple(tensor.shape) != shape:
            raise MalformedModelError(
                f"{self.where}: weight {name!r} has shape {tuple(tensor.shape)}, expected {shape}"
            )
        return tensor.to(self.dtype).contiguous()


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
