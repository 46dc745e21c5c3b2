"""Large CPU buffers on transparent huge pages.

A decode step reads every running sequence's keys and values once, scattered over a KV pool of
hundreds of MB: with 4 KB pages about a quarter of the decode attention kernel's time went to
TLB misses. ``zeros`` asks Linux for 2 MB pages for the buffer (``madvise(MADV_HUGEPAGE)``,
which works where the machine's setting is ``madvise`` or ``always``) before the first touch,
so the zeroing faults them in as huge pages. Anywhere it cannot (another OS, huge pages off, a
CUDA tensor) the buffer is an ordinary one. ``$HELIUM_KV_HUGEPAGES=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import torch

log = logging.getLogger(__name__)

DISABLE_ENV = "HELIUM_KV_HUGEPAGES"
HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h
_MIN_BYTES = 4 * HUGE_PAGE  # smaller buffers gain nothing worth a syscall


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros(shape, dtype=dtype, device=device)``, on huge pages where it can be."""
    if device.type != "cpu" or not sys.platform.startswith("linux") or \
            os.environ.get(DISABLE_ENV, "1") == "0":
        return torch.zeros(shape, dtype=dtype, device=device)
    tensor = torch.empty(shape, dtype=dtype, device=device)  # not touched yet
    advise_huge_pages(tensor.data_ptr(), tensor.numel() * tensor.element_size())
    return tensor.zero_()


def advise_huge_pages(address: int, num_bytes: int) -> bool:
    """Ask for huge pages on the whole 2 MB pages inside ``[address, address + num_bytes)``;
    False where the kernel refused (the memory works as before either way)."""
    start = -(-address // HUGE_PAGE) * HUGE_PAGE
    end = (address + num_bytes) // HUGE_PAGE * HUGE_PAGE
    if end - start < _MIN_BYTES:
        return False
    libc = _libc()
    if libc is None:
        return False
    if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE) != 0:
        log.debug("madvise(MADV_HUGEPAGE) refused: errno %d", ctypes.get_errno())
        return False
    return True


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.madvise.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None
