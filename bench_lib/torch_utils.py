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
    """Collect what no one references any more and give the device's cached blocks back (after a model is closed,
    or after a failed call whose tensors are now unreferenced)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
