"""The torch helpers every backend and stage shares. torch is imported inside them only, and `free_memory` does not
import it at all: a process that never loaded a model has no device memory to give back."""

from __future__ import annotations

import gc
import sys


def torch_dtype(name: str):
    """The torch dtype of a config's dtype name ("float32", "bfloat16", "float16")."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def free_memory() -> None:
    """Give an accelerator's cached blocks back after a model is closed, or after a failed call whose tensors are
    now unreferenced: collect the cycles that still hold device tensors (a pipeline's modules and hooks reference
    each other), then empty the allocator's cache.

    Only where a device allocator is in use (CUDA, XPU, MPS initialised): on CPU there is no cache to give back and
    Python's own collector reclaims the cycles, while a full `gc.collect()` in a process holding torch, transformers
    and diffusers costs ~0.4 s per call (measured on this project's 2-core machine)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return  # a process that never loaded torch has no device memory
    used = [backend for backend in (torch.cuda, getattr(torch, "xpu", None), getattr(torch, "mps", None))
            if backend is not None and _initialised(backend)]
    if not used:
        return
    gc.collect()
    for backend in used:
        backend.empty_cache()


def _initialised(backend) -> bool:
    is_initialized = getattr(backend, "is_initialized", None)
    if is_initialized is not None:
        return bool(is_initialized())
    return bool(getattr(backend, "is_available", lambda: False)())  # mps: no is_initialized
