"""Shared fixtures: a tiny offline Llama model directory and an embedded engine on it."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-weight Llama model with a trained BPE tokenizer (built once per session)."""
    from helium_trt.engine.embedded.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture
def embedded_engine(tiny_model_dir):
    """A fresh EmbeddedEngine on the tiny model (256 blocks of 16 tokens), closed afterwards."""
    from helium_trt.engine.config import EngineConfig
    from helium_trt.engine.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=256,
                                         max_num_batched_tokens=128, dtype="float32"))
    yield engine
    asyncio.run(engine.close())
