"""Model hyperparameters read from a Hugging Face ``config.json`` (Llama and Qwen2 families)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from helium_trt.errors import HeliumError, ModelNotFoundError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


class MalformedModelError(HeliumError):
    """A model directory exists but its config, weights or tokenizer are unusable."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The decoder shape. ``qkv_bias`` is Qwen2's bias on the q/k/v projections."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelConfig:
        path = Path(model_dir) / "config.json"
        if not Path(model_dir).is_dir():
            raise ModelNotFoundError(f"model directory {str(model_dir)!r} does not exist")
        if not path.is_file():
            raise ModelNotFoundError(f"model directory {str(model_dir)!r} has no config.json")
        try:
            raw = json.loads(path.read_text())
            return cls.from_dict(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedModelError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        model_type = raw.get("model_type", "llama")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise MalformedModelError(
                f"model_type {model_type!r} is not supported (one of {SUPPORTED_MODEL_TYPES})"
            )
        _check_rope_scaling(raw)
        num_heads = int(raw["num_attention_heads"])
        hidden_size = int(raw["hidden_size"])
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden_size,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=_rope_theta(raw),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(raw.get("attention_bias", False)),
            eos_token_ids=eos_ids,
            bos_token_id=raw.get("bos_token_id"),
        )


def _rope_theta(raw: dict) -> float:
    params = raw.get("rope_parameters") or {}
    return float(params.get("rope_theta") or raw.get("rope_theta") or 10000.0)


def _check_rope_scaling(raw: dict) -> None:
    for key in ("rope_scaling", "rope_parameters"):
        scaling = raw.get(key) or {}
        kind = scaling.get("rope_type") or scaling.get("type") or "default"
        if kind != "default":
            raise MalformedModelError(f"{key} of type {kind!r} is not supported")
