"""`helium-trt model build-tiny` writes a directory the engine serves."""

from __future__ import annotations

import asyncio

from engine_helpers import request, run_all

from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.convert import is_model_dir
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.server.cli import main


def test_build_tiny_command_then_serve(tmp_path, capsys):
    target = tmp_path / "tiny"
    assert main(["model", "build-tiny", str(target)]) == 0
    assert "tiny model written" in capsys.readouterr().out
    assert is_model_dir(target)
    engine = EmbeddedEngine(EngineConfig(model_dir=str(target), num_blocks=32))
    try:
        [result] = run_all(engine, [request("x", engine.tokenizer.encode("Hello"), max_tokens=3, ignore_eos=True)])
    finally:
        asyncio.run(engine.close())
    assert len(result.output_token_ids) == 3
