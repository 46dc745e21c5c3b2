"""The KV pool on transparent huge pages: its memory is advised for 2 MB pages where the machine
allows it, reads as zeros, and $HELIUM_KV_HUGEPAGES=0 turns the advice off."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from helium_trt.engine.embedded import hugepages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str | None:
    if not sys.platform.startswith("linux") or not THP.exists():
        return None
    return re.search(r"\[(\w+)\]", THP.read_text()).group(1)


def _advised_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor``'s memory in mappings marked for huge pages ("hg" in VmFlags of
    /proc/self/smaps; madvise splits the buffer's mapping at its first and last whole huge page).
    NOTE: the advice, not AnonHugePages: how many huge pages the kernel finds free to back it
    depends on the machine's memory fragmentation, not on this code."""
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    total, overlap = 0, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if m := re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line):
            overlap = max(0, min(end, int(m.group(2), 16)) - max(start, int(m.group(1), 16)))
        elif overlap and line.startswith("VmFlags:") and "hg" in line.split()[1:]:
            total += overlap
    return total


needs_thp = pytest.mark.skipif(_thp_mode() not in ("madvise", "always"),
                               reason="transparent huge pages are off on this machine")


@needs_thp
def test_a_large_pool_is_advised_for_huge_pages_and_reads_as_zeros():
    shape = (4, 2, 3, 256, 16, 64)  # 48 MiB of bf16
    pool = hugepages.zeros(shape, torch.bfloat16, torch.device("cpu"))
    assert pool.shape == shape and pool.dtype == torch.bfloat16
    assert not pool.any()
    assert _advised_bytes(pool) >= pool.numel() * pool.element_size() - 2 * hugepages.HUGE_PAGE


@needs_thp
def test_switched_off_the_pool_stays_on_small_pages(monkeypatch):
    monkeypatch.setenv(hugepages.DISABLE_ENV, "0")
    pool = hugepages.zeros((48 << 20,), torch.uint8, torch.device("cpu"))
    assert not pool.any() and _advised_bytes(pool) == 0


def test_small_or_unaligned_ranges_are_not_advised():
    # Under four whole huge pages inside the range: nothing to gain, no syscall.
    assert not hugepages.advise_huge_pages(hugepages.HUGE_PAGE + 1, 4 * hugepages.HUGE_PAGE)


def test_the_model_allocates_its_kv_pool_on_huge_pages_where_it_can(tiny_model_dir):
    from helium_trt.engine.embedded.loader import load_model

    model = load_model(str(tiny_model_dir), torch.float32)
    pool = model.allocate_kv_cache(num_blocks=2048, block_size=16)
    assert not pool.any()
    if _thp_mode() in ("madvise", "always") and pool.numel() * pool.element_size() >= 16 << 20:
        assert _advised_bytes(pool) > 0
