"""helium_trt: workflow-aware LLM serving for NVIDIA Triton Inference Server."""

__version__ = "0.1.0"
