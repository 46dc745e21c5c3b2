"""Engines for benchmark systems: the embedded engine (weights loaded once) and the vLLM peer."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from helium_trt.bench import vllm_server
from helium_trt.bench.systems import System
from helium_trt.engine.base import Engine, EngineInfo
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.engine.openai import OpenAIHttpEngine
from helium_trt.engine.tokenizer import HFTokenizer


class BenchEngines:
    """``build`` gives each system a fresh engine (an empty KV cache) on shared weights."""

    def __init__(self, model_dir: Path, dtype: str = "bfloat16", block_size: int = 16,
                 kv_cache_mb: int = 512, vllm: vllm_server.VllmConfig | None = None,
                 num_workers: int = 1, num_threads: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.num_workers = num_workers
        self.num_threads = num_threads
        self.dtype = dtype
        self.block_size = block_size
        self.kv_cache_mb = kv_cache_mb
        self.vllm = vllm
        self._model = None
        self._vllm_url: str | None = None

    @contextmanager
    def session(self, kind: str) -> Iterator[None]:
        if kind != "vllm":
            yield
            return
        if self.vllm is None:
            raise RuntimeError("no vLLM configuration")
        with vllm_server.running_server(self.vllm) as url:
            self._vllm_url = url
            try:
                yield
            finally:
                self._vllm_url = None

    def build_workers(self, system: System, kv_blocks: int | None) -> list[Engine]:
        """``num_workers`` embedded engines on the shared weights (one vLLM server: one)."""
        if system.engine == "vllm":
            return [self._vllm_engine()]
        return [self.build(system, kv_blocks) for _ in range(self.num_workers)]

    def build(self, system: System, kv_blocks: int | None) -> Engine:
        if system.engine == "vllm":
            return self._vllm_engine()
        config = EngineConfig(model_dir=str(self.model_dir), block_size=self.block_size,
                              num_blocks=kv_blocks, kv_cache_mb=self.kv_cache_mb,
                              dtype=self.dtype, enable_prefix_caching=system.prefix_caching,
                              num_threads=self.num_threads)
        engine = EmbeddedEngine(config, model=self._model)
        self._model = engine.model
        return engine

    def _vllm_engine(self) -> Engine:
        assert self._vllm_url is not None and self.vllm is not None
        vllm_server.reset_prefix_cache(self._vllm_url)
        tokenizer = HFTokenizer.from_dir(self.model_dir)
        info = EngineInfo(model_name="bench", block_size=self.vllm.block_size,
                          num_blocks=self.vllm.kv_cache_gib * 2**30 // _bytes_per_block(self.vllm),
                          max_model_len=self.vllm.max_model_len, vocab_size=49152,
                          eos_token_ids=tuple(tokenizer.eos_token_ids))
        return OpenAIHttpEngine(self._vllm_url, "bench", tokenizer, info)


def _bytes_per_block(config: vllm_server.VllmConfig) -> int:
    # SmolLM2-135M: 30 layers x (K, V) x 3 KV heads x 64 dims x bf16.
    return 30 * 2 * 3 * 64 * 2 * config.block_size
