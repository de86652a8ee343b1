"""The torch helpers shared by every backend and stage (bench_lib.torch_utils)."""

import subprocess
import sys


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_the_judge_backend_does_not_import_the_editor_backend_and_free_memory_needs_no_torch():
    done = run_python(
        "import sys\n"
        "import bench_lib.judges.qwen_vl\n"
        "assert 'bench_lib.editors.diffusers_pipeline' not in sys.modules, 'the judge imports the editor backend'\n"
        "from bench_lib.torch_utils import free_memory\n"
        "free_memory()\n"
        "assert 'torch' not in sys.modules, 'free_memory imported torch'\n")
    assert done.returncode == 0, done.stderr


def test_torch_dtype():
    import torch

    from bench_lib.torch_utils import torch_dtype

    assert [torch_dtype(n) for n in ("float32", "bfloat16", "float16")] == [torch.float32, torch.bfloat16,
                                                                           torch.float16]



def test_free_memory_collects_and_empties_only_a_device_allocator_in_use(monkeypatch):
    """On CPU there is nothing to give back (and a full collection costs ~0.4 s); with CUDA initialised the cycles
    that hold device tensors are collected first, then the allocator's cache is emptied."""
    import gc

    import torch

    from bench_lib.torch_utils import free_memory

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    free_memory()
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    free_memory()
    assert calls == ["collect", "empty_cache"]
