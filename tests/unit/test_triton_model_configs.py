"""The CPU stand-in and the GPU TensorRT-LLM model declare the same tensor contract.

Both config.pbtxt files are parsed as Triton ModelConfig messages; every tensor the stand-in
declares must appear in the GPU config with the same dtype, dims, reshape and optionality, and
everything TritonEngine sends must be declared by the stand-in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helium_trt.engine.base import EngineRequest, RetentionRange, SamplingConfig
from helium_trt.engine.triton.trtllm_contract import request_to_tensors

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "model_repo" / "tensorrt_llm" / "config.pbtxt"
GPU = ROOT / "deploy" / "gpu" / "tensorrt_llm" / "config.pbtxt"


def load(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def signature(tensor) -> tuple:
    reshape = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else None
    optional = getattr(tensor, "optional", False)
    return tensor.data_type, tuple(tensor.dims), reshape, optional


def test_both_models_are_decoupled_tensorrt_llm_with_batching():
    standin, gpu = load(STANDIN), load(GPU)
    assert standin.name == gpu.name == "tensorrt_llm"
    assert standin.model_transaction_policy.decoupled and gpu.model_transaction_policy.decoupled
    assert standin.max_batch_size > 0 and gpu.max_batch_size > 0
    assert (standin.backend, gpu.backend) == ("python", "tensorrtllm")


def test_gpu_config_enables_kv_block_reuse_on_the_inflight_batcher():
    params = {key: value.string_value for key, value in load(GPU).parameters.items()}
    assert params["enable_kv_cache_reuse"] == "true"
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["exclude_input_in_output"] == "true"
    assert int(params["tokens_per_block"]) > 0


@pytest.mark.parametrize("kind", ["input", "output"])
def test_standin_tensors_match_the_gpu_model(kind):
    standin = {t.name: signature(t) for t in getattr(load(STANDIN), kind)}
    gpu = {t.name: signature(t) for t in getattr(load(GPU), kind)}
    missing = sorted(set(standin) - set(gpu))
    assert not missing, f"stand-in {kind}s the GPU model lacks: {missing}"
    assert {name: gpu[name] for name in standin} == standin


def test_everything_triton_engine_sends_is_declared():
    request = EngineRequest(
        "r", (1, 2, 3), SamplingConfig(max_tokens=4, temperature=0.7, seed=3, stop_token_ids=(9,)),
        retention_ranges=(RetentionRange(0, 2, 80, 100),), decode_retention_priority=10,
        decode_retention_duration_ms=5,
    )
    sent = request_to_tensors(request, end_id=2, pad_id=0, extra_stop_token_ids=(7,))
    declared = {t.name: t for t in load(STANDIN).input}
    triton_dtypes = {"int32": "TYPE_INT32", "float32": "TYPE_FP32", "uint64": "TYPE_UINT64", "bool": "TYPE_BOOL"}
    for name, array in sent.items():
        assert name in declared, name
        assert model_config_pb2.DataType.Name(declared[name].data_type) == triton_dtypes[str(array.dtype)], name
        assert array.shape[0] == 1, name  # the batch dimension
