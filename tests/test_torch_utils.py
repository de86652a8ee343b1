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


def test_torch_dtype_and_free_memory_with_torch_loaded():
    import torch

    from bench_lib.torch_utils import free_memory, torch_dtype

    assert [torch_dtype(n) for n in ("float32", "bfloat16", "float16")] == [torch.float32, torch.bfloat16,
                                                                           torch.float16]
    free_memory()  # with torch loaded and no device: collects, nothing else to give back
