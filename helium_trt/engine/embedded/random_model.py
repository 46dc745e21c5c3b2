"""A random-weight Llama model of a realistic shape, built on the spot around a real tokenizer.

For timing the engine where no real weights can be fetched (a lent GPU machine reaches no hub):
the shapes, dtypes and tokenizer are real, the weights are noise, so token counts and timings
mean what they mean for a trained model, outputs do not.

``python -m helium_trt.engine.embedded.random_model --shape llama-1b --tokenizer DIR --out DIR``
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "generation_config.json", "vocab.json", "merges.txt", "chat_template.jinja")


@dataclass(frozen=True, slots=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 500000.0
    max_position_embeddings: int = 8192


# llama-1b: Llama 3.2 1B's transformer (the vocabulary is the tokenizer's, e.g. 49,152 for
# SmolLM2's instead of 128,256). tiny: for dry runs of the same scripts on a CPU.
SHAPES = {
    "llama-1b": Shape(2048, 8192, 16, 32, 8, 64),
    "tiny": Shape(64, 128, 2, 4, 2, 16, rope_theta=10000.0, max_position_embeddings=4096),
}


def build_random_model(out: str | Path, shape: Shape, tokenizer_dir: str | Path,
                       dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Write config.json, model.safetensors (normal(0, 0.02) weights, unit norms, tied
    embeddings) and ``tokenizer_dir``'s tokenizer files into ``out``."""
    out, source = Path(out), Path(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    source_config = json.loads((source / "config.json").read_text())
    vocab_size = source_config["vocab_size"]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size, "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers, "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads, "head_dim": shape.head_dim,
        "hidden_act": "silu", "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": 1e-5, "rope_theta": shape.rope_theta, "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": str(dtype).removeprefix("torch."),
        "bos_token_id": source_config.get("bos_token_id"), "eos_token_id": source_config.get("eos_token_id"),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_weights(shape, vocab_size, dtype, seed), str(out / "model.safetensors"))
    return out


def _weights(shape: Shape, vocab_size: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h, q, kv = shape.hidden_size, shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim

    def normal(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=gen) * 0.02).to(dtype)

    tensors = {"model.embed_tokens.weight": normal(vocab_size, h),
               "model.norm.weight": torch.ones(h, dtype=dtype)}
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "self_attn.q_proj.weight": normal(q, h), p + "self_attn.k_proj.weight": normal(kv, h),
            p + "self_attn.v_proj.weight": normal(kv, h), p + "self_attn.o_proj.weight": normal(h, q),
            p + "mlp.gate_proj.weight": normal(shape.intermediate_size, h),
            p + "mlp.up_proj.weight": normal(shape.intermediate_size, h),
            p + "mlp.down_proj.weight": normal(h, shape.intermediate_size),
            p + "input_layernorm.weight": torch.ones(h, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype),
        })
    return tensors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-1b")
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="a model directory to take the tokenizer from")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    path = build_random_model(args.out, SHAPES[args.shape], args.tokenizer)
    print(f"{args.shape} random-weight model in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
