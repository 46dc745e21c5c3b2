"""The OpenAI-compatible engine: helium's Engine protocol over a completions server (vLLM ...)."""

from helium_trt.engine.openai.engine import OpenAIHttpEngine, StreamTiming, connect_endpoints

__all__ = ["OpenAIHttpEngine", "StreamTiming", "connect_endpoints"]
