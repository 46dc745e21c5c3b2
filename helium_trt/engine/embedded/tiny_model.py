"""Build a tiny random-weight Llama model with a real trained BPE tokenizer, offline, in seconds.

Used by tests and demos that need a genuine Hugging Face-format directory (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) without downloading anything.
"""

from __future__ import annotations

import json
import pydoc
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS_MODULES = ("string", "json", "collections", "argparse", "dataclasses", "heapq", "textwrap",
                   "functools", "itertools", "random", "re", "pathlib", "asyncio", "logging")
_EXTRA_TEXT = (
    "The primary colors are red, blue and yellow. Mixing red and blue gives purple. "
    "You are a helpful assistant. Answer the question briefly and clearly. "
    "Name three primary colors. What is the capital of France? Paris is the capital of France. "
)


@dataclass(frozen=True, slots=True)
class TinyModelConfig:
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    seed: int = 0


def build_tiny_model(path: str | Path, config: TinyModelConfig = TinyModelConfig()) -> Path:
    """Write a complete tiny model directory at ``path`` and return it."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(config.vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    hf_config = _hf_config(config, vocab_size)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|im_end|>", "bos_token": None, "chat_template": CHATML_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_position_embeddings,
    }, indent=2))
    save_file(_random_weights(config, vocab_size), str(out / "model.safetensors"))
    return out


def _corpus() -> list[str]:
    texts = [_EXTRA_TEXT] * 20
    for name in _CORPUS_MODULES:
        module = __import__(name)
        texts.append(pydoc.getdoc(module))
        texts.extend(pydoc.getdoc(getattr(module, attr)) for attr in sorted(dir(module))
                     if not attr.startswith("_"))
    return [t for t in texts if t]


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _hf_config(config: TinyModelConfig, vocab_size: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.hidden_size // config.num_heads, "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "attention_bias": False,
        "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
    }


def _random_weights(config: TinyModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(config.seed)
    h, i = config.hidden_size, config.intermediate_size
    head_dim = h // config.num_heads
    q_size, kv_size = config.num_heads * head_dim, config.num_kv_heads * head_dim

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    weights = {
        "model.embed_tokens.weight": normal(vocab_size, h, std=1.0),
        "model.norm.weight": 1.0 + normal(h, std=0.1),
        # A wide output layer makes next-token distributions peaked enough to give varied text.
        "lm_head.weight": normal(vocab_size, h, std=0.3),
    }
    for n in range(config.num_layers):
        p = f"model.layers.{n}."
        weights.update({
            p + "input_layernorm.weight": 1.0 + normal(h, std=0.1),
            p + "post_attention_layernorm.weight": 1.0 + normal(h, std=0.1),
            p + "self_attn.q_proj.weight": normal(q_size, h, std=0.15),
            p + "self_attn.k_proj.weight": normal(kv_size, h, std=0.15),
            p + "self_attn.v_proj.weight": normal(kv_size, h, std=0.15),
            p + "self_attn.o_proj.weight": normal(h, q_size, std=0.1),
            p + "mlp.gate_proj.weight": normal(i, h, std=0.1),
            p + "mlp.up_proj.weight": normal(i, h, std=0.1),
            p + "mlp.down_proj.weight": normal(h, i, std=0.1),
        })
    return {name: tensor.contiguous() for name, tensor in weights.items()}
