"""engine.loader reads safetensors lazily (one tensor at a time through safe_open): sharded
checkpoints, dtype conversion on the way, and damaged files, on the tiny model's real weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helium_trt.engine.embedded.loader import load_model
from helium_trt.engine.embedded.model_config import MalformedModelError

WEIGHTS = ("qkv", "o_proj", "gate_up", "down", "input_norm", "post_norm")


def weights_of(model) -> dict[str, torch.Tensor]:
    named = {"embed": model.embed, "final_norm": model.final_norm, "lm_head": model.lm_head}
    for i, layer in enumerate(model.layers):
        named.update({f"{i}.{name}": getattr(layer, name) for name in WEIGHTS})
    return named


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return weights_of(load_model(tiny_model_dir, torch.float32))


def copy_without_weights(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return target


def test_a_sharded_checkpoint_loads_the_same_weights(tiny_model_dir, tmp_path, reference):
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    names = sorted(tensors)
    target = copy_without_weights(tiny_model_dir, tmp_path)
    for index, part in enumerate((names[::2], names[1::2])):  # a layer's tensors in both shards
        shard = target / f"model-0000{index + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(shard))
    loaded = weights_of(load_model(target, torch.float32))
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_weights_are_converted_as_they_are_read(tiny_model_dir, tmp_path, reference):
    target = copy_without_weights(tiny_model_dir, tmp_path)
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    save_file({n: t.to(torch.bfloat16) for n, t in tensors.items()},
              str(target / "model.safetensors"))
    from_bf16_file = weights_of(load_model(target, torch.float32))
    to_bf16 = weights_of(load_model(tiny_model_dir, torch.bfloat16))
    for name, weight in reference.items():
        assert to_bf16[name].dtype == torch.bfloat16 and to_bf16[name].is_contiguous()
        assert torch.equal(to_bf16[name], weight.to(torch.bfloat16)), name
        assert from_bf16_file[name].dtype == torch.float32
        assert torch.equal(from_bf16_file[name], weight.to(torch.bfloat16).float()), name


def test_a_truncated_file_names_the_file(tiny_model_dir, tmp_path):
    target = copy_without_weights(tiny_model_dir, tmp_path)
    data = (tiny_model_dir / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedModelError, match="model.safetensors: unreadable safetensors file"):
        load_model(target)


def test_a_missing_weight_is_named(tiny_model_dir, tmp_path):
    target = copy_without_weights(tiny_model_dir, tmp_path)
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(target / "model.safetensors"))
    missing = "'model.layers.1.mlp.down_proj.weight' is missing"
    with pytest.raises(MalformedModelError, match=missing):
        load_model(target)
