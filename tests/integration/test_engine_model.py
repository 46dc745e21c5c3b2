"""The engine's transformer against transformers' LlamaForCausalLM on the same tiny weights."""

from __future__ import annotations

import pytest
import torch

from helium_trt.engine.embedded.loader import load_model
from helium_trt.engine.embedded.model import AttentionBatch, DecodeGroup, PrefillSegment
from helium_trt.engine.tokenizer import HFTokenizer

transformers = pytest.importorskip("transformers")

BS = 16


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    return transformers.LlamaForCausalLM.from_pretrained(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def prompts(tiny_model_dir):
    tok = HFTokenizer.from_dir(tiny_model_dir)
    return [tok.encode("Name three primary colors. " * 8), tok.encode("What is the capital of France?")]


def _hf_logits(hf_model, ids):
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0]


def test_chunked_prefill_logits_match_transformers(tiny_model_dir, hf_model, prompts):
    model = load_model(tiny_model_dir)
    kv = model.allocate_kv_cache(8, BS)
    ids = prompts[0]
    split = 13  # second chunk attends to a cached prefix through the paged pool
    blocks = torch.tensor([5, 2, 7, 3])  # deliberately scattered over the pool
    slots = (blocks[:, None] * BS + torch.arange(BS)).view(-1)
    logits = []
    with torch.inference_mode():
        for start, end in ((0, split), (split, len(ids))):
            segment = PrefillSegment(0, end - start, blocks, end)
            batch = AttentionBatch(slots[start:end], [segment], [])
            hidden = model.forward(torch.tensor(ids[start:end]), torch.arange(start, end), batch, kv)
            logits.append(model.logits(hidden))
    torch.testing.assert_close(torch.cat(logits), _hf_logits(hf_model, ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("splits", [(0, 150), (0, 70, 150), (0, 64, 128, 150)])
def test_blocked_prefill_over_several_query_blocks_matches_transformers(tiny_model_dir, hf_model, prompts,
                                                                         splits):
    """Chunks longer than PREFILL_QUERY_BLOCK, starting on and off its boundaries, after a
    cached prefix or not: every row's logits as transformers computes them."""
    from helium_trt.engine.embedded.model import PREFILL_QUERY_BLOCK

    ids = (prompts[0] * 4)[:splits[-1]]
    assert len(ids) == splits[-1] > 2 * PREFILL_QUERY_BLOCK
    model = load_model(tiny_model_dir)
    kv = model.allocate_kv_cache(16, BS)
    blocks = torch.tensor([9, 3, 14, 0, 7, 11, 2, 5, 12, 1])
    slots = (blocks[:, None] * BS + torch.arange(BS)).view(-1)
    logits = []
    with torch.inference_mode():
        for start, end in zip(splits, splits[1:]):
            batch = AttentionBatch(slots[start:end], [PrefillSegment(0, end - start, blocks, end)], [])
            hidden = model.forward(torch.tensor(ids[start:end]), torch.arange(start, end), batch, kv)
            logits.append(model.logits(hidden))
    torch.testing.assert_close(torch.cat(logits), _hf_logits(hf_model, ids), atol=1e-4, rtol=1e-4)


@pytest.fixture(params=["native", "torch"])
def decode_path(request, monkeypatch):
    """Decode attention by the native paged kernel (used while torch runs one thread), or by
    torch's gather path (the kernel switched off)."""
    from helium_trt.engine.embedded import native

    threads = torch.get_num_threads()
    if request.param == "native":
        if native.paged_decode() is None:
            pytest.skip("no C compiler: the native kernel is unavailable")
        torch.set_num_threads(1)
    else:
        monkeypatch.setenv(native.DISABLE_ENV, "0")
    yield request.param
    torch.set_num_threads(threads)


def test_batched_decode_logits_match_transformers(tiny_model_dir, hf_model, prompts, decode_path):
    """Two sequences of different lengths decode in one step, one block table padded."""
    model = load_model(tiny_model_dir)
    kv = model.allocate_kv_cache(8, BS)
    a, b = prompts
    blocks_a, blocks_b = torch.tensor([1, 0, 4, 6]), torch.tensor([7, 0, 0, 0])  # b needs one
    slots_a = (blocks_a[:, None] * BS + torch.arange(BS)).view(-1)[:len(a)]
    slots_b = (blocks_b[:1, None] * BS + torch.arange(BS)).view(-1)[:len(b)]
    assert len(a) > 3 * BS and len(b) <= BS
    with torch.inference_mode():
        for ids, slots, blocks in ((a[:-1], slots_a[:-1], blocks_a), (b[:-1], slots_b[:-1], blocks_b[:1])):
            batch = AttentionBatch(slots, [PrefillSegment(0, len(ids), blocks, len(ids))], [])
            model.forward(torch.tensor(ids), torch.arange(len(ids)), batch, kv)
        batch = AttentionBatch(torch.stack([slots_a[-1], slots_b[-1]]), [],
                               [DecodeGroup(0, torch.stack([blocks_a, blocks_b]), torch.tensor([len(a), len(b)]))])
        hidden = model.forward(torch.tensor([a[-1], b[-1]]), torch.tensor([len(a) - 1, len(b) - 1]), batch, kv)
        logits = model.logits(hidden)
    torch.testing.assert_close(logits[0], _hf_logits(hf_model, a)[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1], _hf_logits(hf_model, b)[-1], atol=1e-4, rtol=1e-4)


def test_greedy_generation_equals_transformers(embedded_engine, hf_model, prompts, decode_path):
    from engine_helpers import request, run_all

    tok = embedded_engine.tokenizer
    all_prompts = prompts + [tok.encode("The primary colors are red, blue and yellow. " * 6)]
    results = run_all(embedded_engine, [request(f"g{i}", p, max_tokens=24, ignore_eos=True)
                                        for i, p in enumerate(all_prompts)])
    for prompt, result in zip(all_prompts, results):
        with torch.inference_mode():
            ref = hf_model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24,
                                    do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
        assert list(result.output_token_ids) == ref
        assert result.text == tok.decode(ref)


# (kv heads, heads, head dim, block size): with AVX512-BF16, bf16 head dims that are multiples of
# 32 take the dpbf16 path (groups of 3 and 8 and dims 64 and 128 have their own unrolled code,
# 32 and 96 the general loops); 48 takes the float32 AVX-512 path; blocks of 12 cut key tiles.
DECODE_SHAPES = [(2, 6, 32, BS), (3, 9, 64, BS), (1, 8, 64, 12), (2, 4, 128, BS), (2, 4, 96, BS),
                 (2, 6, 48, BS)]


@pytest.mark.parametrize("shape", DECODE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_paged_decode_equals_the_gather_path(dtype, shape):
    """The kernel on ragged lengths (one key, block boundaries, a long context), scattered and
    padded block tables and grouped-query heads: the torch path's result within rounding."""
    from helium_trt.engine.embedded import native
    from helium_trt.engine.embedded.model import _decode_attention_by_gather

    kernel = native.paged_decode()
    if kernel is None:
        pytest.skip("no C compiler: the native kernel is unavailable")
    gen = torch.Generator().manual_seed(0)
    kv_heads, heads, dim, block_size = shape
    blocks = 8 * 300 // block_size
    k_cache = torch.randn(kv_heads, blocks, block_size, dim, generator=gen).to(dtype)
    v_cache = torch.randn(kv_heads, blocks, block_size, dim, generator=gen).to(dtype)
    lengths = torch.tensor([1, 16, 17, 300, 45])
    table = torch.randperm(blocks, generator=gen)[:5 * (blocks // 5)].view(5, -1)
    q = torch.randn(5, heads, dim, generator=gen).to(dtype)
    out = kernel(q, k_cache, v_cache, table, lengths, dim ** -0.5)
    ref = _decode_attention_by_gather(q.double(), table, lengths, k_cache.double(), v_cache.double(),
                                      kv_heads, dim ** -0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    if dtype == torch.bfloat16:  # of the order of rounding the exact result to bf16
        assert (out.double() - ref).abs().mean() <= 2 * (ref.bfloat16().double() - ref).abs().mean()


@pytest.mark.parametrize("shape", [(1, 0, 4, 2, 16), (5, 0, 4, 2, 16), (13, 7, 4, 2, 16),
                                   (100, 37, 6, 2, 32), (70, 200, 6, 2, 32), (64, 0, 9, 3, 64),
                                   (33, 31, 6, 1, 128)])
def test_native_paged_prefill_equals_attention_in_float64(shape):
    """The bf16 prefill kernel over a scattered block table: chunks with and without a cached
    prefix, row blocks and key tiles cut anywhere, grouped-query heads, head dims 16 to 128;
    its error is of the order of rounding the exact result to bf16."""
    from helium_trt.engine.embedded import native
    from helium_trt.engine.embedded.model import _sdpa_prefill

    kernel = native.paged_prefill()
    if kernel is None:
        pytest.skip("no C compiler or no AVX512-BF16: the prefill kernel is unavailable")
    n, first, heads, kv_heads, dim = shape
    gen = torch.Generator().manual_seed(n + first)
    blocks, context = 64, first + n
    k_cache = torch.randn(kv_heads, blocks, BS, dim, generator=gen).bfloat16()
    v_cache = torch.randn(kv_heads, blocks, BS, dim, generator=gen).bfloat16()
    table = torch.randperm(blocks, generator=gen)[:-(-context // BS)]
    q = torch.randn(n, heads, dim, generator=gen).bfloat16()
    out = kernel(q, k_cache, v_cache, table, context, dim ** -0.5)
    k, v = (cache[:, table].reshape(kv_heads, -1, dim)[:, :context].double() for cache in (k_cache, v_cache))
    ref = _sdpa_prefill(q.double(), k, v, first)
    error = (out.double() - ref).abs()
    rounding = (ref.bfloat16().double() - ref).abs()
    assert error.max() < 2e-2
    assert error.mean() <= 2 * rounding.mean() + 1e-6


def test_bf16_forward_with_native_prefill_matches_the_torch_path(tiny_model_dir, prompts, monkeypatch):
    """A bf16 prefill in two chunks (the second over a cached prefix), then one decode token:
    the native kernels give the torch path's hidden states within bf16 rounding."""
    from helium_trt.engine.embedded import native

    if native.paged_prefill() is None:
        pytest.skip("no C compiler or no AVX512-BF16: the prefill kernel is unavailable")
    ids = prompts[0]
    blocks = torch.tensor([5, 2, 7, 0, 3, 6])
    slots = (blocks[:, None] * BS + torch.arange(BS)).view(-1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = []
        for switch in ("1", "0"):
            monkeypatch.setenv(native.DISABLE_ENV, switch)
            model = load_model(tiny_model_dir, torch.bfloat16)
            kv = model.allocate_kv_cache(8, BS)
            with torch.inference_mode():
                hidden = []
                for start, end in ((0, 19), (19, len(ids))):
                    batch = AttentionBatch(slots[start:end], [PrefillSegment(0, end - start, blocks, end)], [])
                    hidden.append(model.forward(torch.tensor(ids[start:end]), torch.arange(start, end), batch, kv))
            results.append(torch.cat(hidden).float())
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[0], results[1], atol=0.1, rtol=0.05)
    assert (results[0] - results[1]).abs().mean() < 0.01


def test_fused_elementwise_ops_equal_torch_ops_within_bf16_rounding():
    """Residual add + RMS norm, SiLU gate and RoPE + KV store, native against torch: the same
    values up to a bf16 rounding, the residual stream updated as torch's add does, the keys and
    values in the same slots (RoPE on a head dim whose half is not a multiple of 16 as well)."""
    from helium_trt.engine.embedded import native
    from helium_trt.engine.embedded.model import TORCH_OPS, _rope_tables
    from helium_trt.engine.embedded.model_config import ModelConfig

    fused = native.fused_ops()
    if fused is None:
        pytest.skip("no C compiler or no AVX512-BF16: the fused kernels are unavailable")
    gen = torch.Generator().manual_seed(3)
    randn = lambda *shape: torch.randn(*shape, generator=gen).bfloat16()  # noqa: E731
    hidden, residual, weight = randn(7, 64) * 4, randn(7, 64), randn(64)
    h_torch, n_torch = TORCH_OPS.add_rms_norm(hidden.clone(), residual, weight, 1e-5)
    h_fused, n_fused = fused.add_rms_norm(hidden.clone(), residual, weight, 1e-5)
    assert torch.equal(h_fused, h_torch)
    torch.testing.assert_close(n_fused.float(), n_torch.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(fused.add_rms_norm(hidden.clone(), None, weight, 1e-5)[1].float(),
                               TORCH_OPS.add_rms_norm(hidden, None, weight, 1e-5)[1].float(), atol=0.05, rtol=0.02)
    gate_up = randn(5, 2 * 48) * 3
    torch.testing.assert_close(fused.silu_mul(gate_up).float(), TORCH_OPS.silu_mul(gate_up).float(),
                               atol=0.05, rtol=0.02)
    for dim in (16, 64):
        heads, kv_heads, n = 4, 2, 6
        config = ModelConfig.from_dict({"hidden_size": heads * dim, "num_attention_heads": heads, "head_dim": dim,
                                        "num_key_value_heads": kv_heads, "intermediate_size": 32,
                                        "num_hidden_layers": 1, "vocab_size": 8, "max_position_embeddings": 64,
                                        "rms_norm_eps": 1e-5, "rope_theta": 10000.0})
        cos, sin = _rope_tables(config, torch.bfloat16)
        qkv = randn(n, (heads + 2 * kv_heads) * dim)
        positions, slots = torch.tensor([0, 3, 9, 10, 40, 63]), torch.tensor([5, 17, 2, 30, 8, 21])
        caches = [(torch.zeros(kv_heads, 2, 16, dim).bfloat16(), torch.zeros(kv_heads, 2, 16, dim).bfloat16())
                  for _ in range(2)]
        q_torch = TORCH_OPS.rope_store(qkv, TORCH_OPS.rope_tables(cos, sin, positions), slots, *caches[0], heads)
        q_fused = fused.rope_store(qkv, fused.rope_tables(cos, sin, positions), slots, *caches[1], heads)
        torch.testing.assert_close(q_fused.float(), q_torch.float(), atol=0.02, rtol=0.02)
        torch.testing.assert_close(caches[1][0].float(), caches[0][0].float(), atol=0.02, rtol=0.02)
        assert torch.equal(caches[1][1], caches[0][1])
        assert caches[1][0].view(kv_heads, -1, dim)[:, slots].abs().sum(-1).min() > 0
