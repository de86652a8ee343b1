"""Image-editing benchmark harness: edit with a diffusers pipeline (or score edits made elsewhere), judge with a
Qwen-VL model, report.

Importing the package is cheap: `evaluate` and `run` (and the model libraries behind them) load on first use, so
the command line's `--help` and its errors come back at once. `evaluate` is the Python API (bench_lib/api.py).
"""

import os

# CPU reproducibility: MKL's BLAS picks its summation order by the memory alignment of the operands, which
# differs between processes, so the same matmul could differ in the last bit on 1 and 2 CPU processes (and
# move a pixel of an edit by one level). Conditional Numerical Reproducibility makes it alignment-independent.
# Set before torch loads MKL; CPU only (GPUs don't use MKL); a user's own MKL_CBWR wins.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

from .config import BenchmarkConfig, ConfigError  # noqa: E402
from .options import config_from_dict, parse_config  # noqa: E402

__all__ = ["BenchmarkConfig", "ConfigError", "EvalResult", "MetricCI", "NothingScored", "RunFailed",
           "config_from_dict", "evaluate", "parse_config", "release_judge", "run"]

_LAZY = {"run": "runner", "evaluate": "api", "release_judge": "api", "EvalResult": "api", "MetricCI": "api",
         "NothingScored": "failures", "RunFailed": "failures"}


def __getattr__(name: str):
    # The Python API (`evaluate`, see bench_lib/api.py and the README's "Python API") and `run` load on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
