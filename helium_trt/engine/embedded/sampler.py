"""Next-token choice: greedy, or temperature / top-k / top-p with a per-request generator.

Each sampled request draws from its own ``torch.Generator`` seeded from its seed, one draw per
token, so its tokens do not depend on which other requests share the batch.
"""

from __future__ import annotations

import random

import torch

from helium_trt.engine.base import SamplingConfig


def make_generator(sampling: SamplingConfig) -> torch.Generator | None:
    """The request's random stream; None for greedy. No seed means a fresh random one."""
    if sampling.temperature == 0.0:
        return None
    seed = sampling.seed if sampling.seed is not None else random.SystemRandom().getrandbits(63)
    return torch.Generator().manual_seed(seed)


def sample(logits: torch.Tensor, configs: list[SamplingConfig],
           generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of ``logits`` [rows, vocab] (float32)."""
    token_ids = logits.argmax(dim=-1).tolist()
    for row, (config, generator) in enumerate(zip(configs, generators)):
        if generator is not None:
            token_ids[row] = _sample_row(logits[row], config, generator)
    return token_ids


def _sample_row(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> int:
    scaled = logits / config.temperature
    candidates = None  # token ids of a reduced candidate set, best first
    if 0 < config.top_k < scaled.shape[-1]:
        scaled, candidates = torch.topk(scaled, config.top_k)
    probs = torch.softmax(scaled, dim=-1)
    if config.top_p < 1.0:
        if candidates is None:
            probs, candidates = torch.sort(probs, descending=True)
        # Keep the smallest head of the distribution whose mass reaches top_p (at least one).
        drop = (probs.cumsum(dim=-1) - probs) >= config.top_p
        probs = probs.masked_fill(drop, 0.0)
    # NOTE: exactly one uniform draw per token (inverse CDF), so the stream stays aligned
    # however the distribution is shaped.
    uniform = torch.rand(1, generator=generator, dtype=torch.float64).item()
    cdf = probs.double().cumsum(dim=0)
    index = int(torch.searchsorted(cdf, uniform * cdf[-1].item(), right=True).item())
    index = min(index, probs.shape[-1] - 1)
    return int(candidates[index]) if candidates is not None else index
