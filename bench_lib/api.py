"""The Python API: the benchmark called from Python, e.g. from a training loop every N steps.

```python
import bench_lib  # before torch (bench_lib sets MKL_CBWR for CPU reproducibility)

accelerator = Accelerator(log_with="tensorboard", project_dir="runs/lora")
accelerator.init_trackers("lora")
...
result = bench_lib.evaluate("configs/qwen_image_edit.yaml", pipeline=pipe, accelerator=accelerator,
                            keep_judge=True, step=step, output_dir=f"runs/lora/eval/checkpoint-{step}")
print(result.score.mean, result.score.ci95)
...
bench_lib.release_judge()
```

`evaluate` is the command line's run (the same stages, files, exit conditions and numbers) with four things the
command line cannot give it: the caller's pipeline in memory, the caller's `Accelerator`, a judge kept loaded
between calls, and the training step the trackers log at. Every process of a launch calls it (it has barriers);
each gets the same `EvalResult`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .config import BenchmarkConfig, ConfigError, load_recipe
from .failures import NothingScored, RunFailed
from .judge_stage import KeptJudge
from .options import config_from_dict, resolve_recipe_paths
from .store import REPORT_FILE, RESULTS_FILE

__all__ = ["EvalResult", "MetricCI", "NothingScored", "RunFailed", "evaluate", "release_judge"]

_KEPT = KeptJudge()  # the judge `keep_judge=True` keeps, for this process


@dataclass(frozen=True)
class MetricCI:
    """One metric's mean over the scored samples and its 95% bootstrap interval (None below 2 scores)."""

    mean: Optional[float]
    ci95: Optional[tuple[float, float]]
    count: int


@dataclass(frozen=True)
class EvalResult:
    """What `evaluate` returns (on every process): the headline numbers and where the files are.

    `metrics`: every metric of the protocol over all scored samples (pooled); `categories`: the same per
    category (the report's per-category table); `primary`: the protocol's primary metric's name (`score` for
    the default protocol). `report`: report.json as a mapping (baselines, uncertainty, timings, provenance...)."""

    output_dir: Path
    report_json: Path
    report_md: Path
    results_jsonl: Path
    gallery_html: Optional[Path]
    primary: str
    metrics: dict[str, MetricCI]
    categories: dict[str, dict[str, MetricCI]]
    scored: int  # samples with status ok
    failed: int  # samples with any other status
    step: Optional[int]
    world_size: int
    judge_loads: int  # judges this process loaded during the call (0: a kept one was used, or nothing to judge)
    report: dict[str, Any]

    @property
    def score(self) -> MetricCI:
        """The primary metric (overall)."""
        return self.metrics[self.primary]


def evaluate(config: Union[BenchmarkConfig, dict, str, os.PathLike], *, pipeline: Any = None,
             accelerator: Any = None, keep_judge: bool = False, step: Optional[int] = None,
             **overrides: Any) -> EvalResult:
    """Run the benchmark (edit, judge, report) and return its headline numbers.

    config: a `BenchmarkConfig`, a mapping of config keys, or a YAML recipe's path (relative paths in it are
        relative to the recipe, as on the command line); `overrides` are config keys that replace its values
        (`output_dir=..., limit=4`). Every key of the command line works.
    pipeline: an editor object already in memory: a diffusers pipeline, with or without active adapters (the
        `diffusers` editor). It is used where it is (device, dtype, adapters), in eval mode while it edits, and
        handed back unchanged: never loaded, moved, freed or fused; each module's training mode and each
        parameter's `requires_grad` are as they were. `editor_model` then only names it in the reports (default:
        the pipeline's `name_or_path`); `lora`, `editor_scheduler` and the speed options are refused (set them
        up on the pipeline). A folder evaluated from memory is never resumed by a later call (nothing identifies
        weights in memory): give each call its own `output_dir`, or `overwrite=True`.
    accelerator: the caller's `Accelerator`, already made (by a training script): its process group is used (no
        second one is created), its trackers get the results (see bench_lib.tracking), and it is left running.
        Without it the call makes (and ends) its own, as the command line does.
    keep_judge: keep the judge loaded after the call, for the next call with the same judge settings (a
        training loop's next evaluation); `release_judge()` frees it. False: everything the call loaded is freed
        (a judge kept by an earlier call is used, then freed too).
    step: the training step the trackers log this evaluation at (default 0).

    The caller's random number generators (torch's on CPU and on this process's GPU, Python's, numpy's) are
    left as they were, so training after the call goes on as if it had not happened.

    Raises `ConfigError` for a bad config (as the command line's exit code 2), `NothingScored` when no sample was
    scored (after the reports are written: the command line's exit code 1), `RunFailed` when the run stopped
    early (its first samples all failed with the same error)."""
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ConfigError(f"`step` must be a non-negative integer or None, got {step!r}.")
    if "output_dir" in overrides:
        if not isinstance(overrides["output_dir"], (str, os.PathLike)):
            raise ConfigError(f"`output_dir` must be a path (str or os.PathLike), got {overrides['output_dir']!r}.")
        overrides = {**overrides, "output_dir": os.fspath(overrides["output_dir"])}
    cfg = resolve_config(config, overrides, pipeline=pipeline)
    if cfg.sweep.sweep:  # several runs and a sweep report: no one EvalResult to return
        raise ConfigError("`sweep` is not for evaluate(), which returns one run's result: call it once per "
                          "checkpoint (its own output_dir each), or run the sweep from the command line.")
    from .runner import run

    before = _KEPT.loads
    with _caller_random_state():
        try:
            top = run(cfg, accelerator=accelerator, pipeline=pipeline, kept_judge=_KEPT, step=step)
        finally:
            if not keep_judge:
                _KEPT.release()
    world_size = accelerator.num_processes if accelerator is not None else int(os.environ.get("WORLD_SIZE", "1"))
    return read_result(top, step=step, world_size=world_size, judge_loads=_KEPT.loads - before)


def release_judge() -> None:
    """Free the judge `evaluate(keep_judge=True)` kept (if any)."""
    _KEPT.release()


def resolve_config(config: Union[BenchmarkConfig, dict, str, os.PathLike], overrides: dict[str, Any], *,
                   pipeline: Any = None) -> BenchmarkConfig:
    """The validated config `evaluate` runs: `config` (object, mapping or recipe path) with `overrides`."""
    if isinstance(config, BenchmarkConfig):
        values, recipe = config.to_dict(), config.recipe
    elif isinstance(config, dict):
        values, recipe = dict(config), None
    elif isinstance(config, (str, os.PathLike)):
        path = Path(config)
        values, recipe = resolve_recipe_paths(load_recipe(path), path.parent), str(path)
    else:
        raise ConfigError(f"`config` must be a BenchmarkConfig, a mapping or a recipe's path, got "
                          f"{type(config).__name__}.")
    values.update(overrides)
    if pipeline is not None and not values.get("editor_model"):
        name = getattr(pipeline, "name_or_path", None)
        values["editor_model"] = name if isinstance(name, str) and name else f"in-memory {type(pipeline).__name__}"
    return config_from_dict(values, recipe=recipe)


def read_result(top: Path, *, step: Optional[int], world_size: int, judge_loads: int) -> EvalResult:
    """The `EvalResult` of a finished run's folder (report.json)."""
    report = json.loads((top / REPORT_FILE).read_text(encoding="utf-8"))
    primary = _primary(report)
    gallery = top / "gallery.html"
    return EvalResult(
        output_dir=top, report_json=top / REPORT_FILE, report_md=top / "report.md",
        results_jsonl=top / RESULTS_FILE, gallery_html=gallery if gallery.is_file() else None, primary=primary,
        metrics=_metrics(report["overall"]),
        categories={name: _metrics(entry) for name, entry in report.get("categories", {}).items()},
        scored=int(report["overall"].get("count", 0)), failed=int(report["overall"].get("failed", 0)), step=step,
        world_size=world_size, judge_loads=judge_loads, report=report)


def _metrics(entry: dict[str, Any]) -> dict[str, MetricCI]:
    metrics = entry.get("metrics") or {"score": entry}
    return {name: MetricCI(mean=stats.get("mean"), ci95=tuple(stats["ci95"]) if stats.get("ci95") else None,
                           count=int(stats.get("count", 0))) for name, stats in metrics.items()}


def _primary(report: dict[str, Any]) -> str:
    declared = (report.get("protocol") or {}).get("primary")
    names = list(report["overall"].get("metrics") or {"score": None})
    return declared if declared in names else "score" if "score" in names else names[0]


@contextlib.contextmanager
def _caller_random_state():
    """Put the caller's random states back afterwards (model loading and the pipeline may draw from them)."""
    import numpy as np
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
