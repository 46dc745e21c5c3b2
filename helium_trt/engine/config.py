"""Configuration of the embedded engine, and where its default model lives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
MODEL_DIR_ENV = "HELIUM_MODEL_DIR"
DEVICE_ENV = "HELIUM_DEVICE"


def default_device() -> str:
    """``$HELIUM_DEVICE`` if set, else "cpu": the embedded engine's torch device wherever no
    flag names one (``helium-trt bench``, run, serve)."""
    return os.environ.get(DEVICE_ENV) or "cpu"


def default_model_dir() -> Path:
    """``$HELIUM_MODEL_DIR`` if set, else ./models/SmolLM2-135M-Instruct under the cwd."""
    return Path(os.environ.get(MODEL_DIR_ENV) or Path("models") / DEFAULT_MODEL_NAME)


def require_model_dir(model_dir: str | None) -> Path:
    """``model_dir`` (or the default) if it holds a model, else ModelNotFoundError saying how to
    get one (the CLI commands' shared check)."""
    from helium_trt.errors import ModelNotFoundError

    path = Path(model_dir) if model_dir else default_model_dir()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"no model at {str(path)!r}: run `helium-trt model fetch` "
                                 "(or pass --model DIR / set HELIUM_MODEL_DIR)")
    return path


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to build an EmbeddedEngine.

    ``num_blocks`` None sizes the KV pool from ``kv_cache_mb``. ``max_model_len`` None uses the
    model's max_position_embeddings. ``num_threads`` None keeps torch's setting (one per core).
    ``dtype`` is "float32" or "bfloat16". ``enable_prefix_caching`` False turns KV reuse
    between requests off (a baseline). ``device`` other than "cpu" runs the same engine on a
    GPU (torch's CUDA kernels).
    """

    model_dir: str | None = None
    block_size: int = 16
    num_blocks: int | None = None
    kv_cache_mb: int = 512
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    num_threads: int | None = None
    dtype: str = "float32"
    enable_prefix_caching: bool = True
    # a torch device ("cuda", "cuda:1"): weights and KV cache live there
    device: str = field(default_factory=default_device)

    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir is not None else default_model_dir()
