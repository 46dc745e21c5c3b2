"""Sampler: top-k / top-p narrowing, seeded streams, and the sampled distribution."""

from __future__ import annotations

import math

import torch

from helium_trt.engine.base import SamplingConfig
from helium_trt.engine.embedded.sampler import make_generator, sample


def _draw(logits: torch.Tensor, config: SamplingConfig, n: int) -> list[int]:
    generator = make_generator(config)
    return [sample(logits.unsqueeze(0), [config], [generator])[0] for _ in range(n)]


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(500, generator=torch.Generator().manual_seed(0))
    best = int(logits.argmax())
    assert set(_draw(logits, SamplingConfig(temperature=1.5, top_k=1, seed=1), 50)) == {best}
    assert set(_draw(logits, SamplingConfig(temperature=1.5, top_p=1e-6, seed=1), 50)) == {best}


def test_top_k_limits_the_candidates():
    logits = torch.randn(500, generator=torch.Generator().manual_seed(0))
    top5 = set(torch.topk(logits, 5).indices.tolist())
    drawn = set(_draw(logits, SamplingConfig(temperature=5.0, top_k=5, seed=3), 200))
    assert drawn <= top5 and len(drawn) > 1


def test_seeded_stream_repeats_and_matches_the_distribution():
    logits = torch.tensor([0.0, math.log(3.0)])
    config = SamplingConfig(temperature=1.0, seed=42)
    first = _draw(logits, config, 2000)
    assert first == _draw(logits, config, 2000)
    assert abs(sum(first) / len(first) - 0.75) < 0.04


def test_greedy_rows_need_no_generator():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    greedy = SamplingConfig()
    assert make_generator(greedy) is None
    assert sample(logits, [greedy, greedy], [None, None]) == [1, 0]
