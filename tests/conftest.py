import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RISEBENCH = ROOT.parent / "shared" / "data" / "risebench"
# A run that only judges: the identity editor (no diffusion) and the tiny judge.
IDENTITY_RUN = {"editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32",
                "judge_min_digit_mass": 0.0}


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Tiny models are built once per test session in a temporary cache, never in the user's home."""
    path = os.environ.get("BENCH_TEST_TINY_CACHE") or str(tmp_path_factory.mktemp("tiny-cache"))
    old = os.environ.get("BENCH_TINY_CACHE")
    os.environ["BENCH_TINY_CACHE"] = path
    yield Path(path)
    if old is None:
        os.environ.pop("BENCH_TINY_CACHE", None)
    else:
        os.environ["BENCH_TINY_CACHE"] = old


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """Five demo samples edited and judged by one plain process (tiny models): the result every multi-process,
    resumed and cluster run of the same samples must reproduce. Made once per session, read-only for tests."""
    from test_multiprocess import REFERENCE_ARGS, make_manifest, run

    folder = tmp_path_factory.mktemp("reference")
    manifest = make_manifest(folder, 5)
    return manifest, run(folder, "one-process", 1, manifest, *REFERENCE_ARGS)
