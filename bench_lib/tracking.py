"""Experiment trackers through accelerate's own tracking API (TensorBoard, W&B, trackio, MLflow, ...).

A run configured with `log_with` logs, after its reports are written, for each output folder (a plain run's, or
each sweep variant's) at one training step (the Python API's `step`; a sweep variant's, from its name:
`checkpoint-500` at 500, a name without a step such as `base` at 0):

- the headline metrics with their 95% intervals, overall and per category, as scalars
  (`eval/<metric>`, `eval/<metric>_ci_low`, `eval/<metric>_ci_high`, `eval/<category>/<metric>`), through
  `Accelerator.log`, so every tracker gets them;
- the per-category table: a `wandb.Table` on W&B, a Markdown table as text on TensorBoard;
- a table of sample images (source, edit, scores), on the trackers that take images: W&B (a `wandb.Table` of
  `wandb.Image`s) and TensorBoard (each sample's source and edit side by side, its scores as text).

Only the main process logs. The trackers are the caller's when the Python API is given an `Accelerator` that has
any (a training script's): the evaluation's values go into the training run. Otherwise the run's own
`Accelerator` starts them (bench_lib.distributed) with `logging_dir` (default `<output_dir>/logs`) and
`tracker_project`, and ends them when the run ends.

Checking a name needs no model library: the tracker names accelerate knows are read from its source (its
`LOGGER_TYPE_TO_CLASS` table) without importing it, so a typo is one line and exit code 2 before torch loads.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from .config import BenchmarkConfig, ConfigError, suggest

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 8  # samples in the image table: the first ones of the dataset order
# The package a tracker needs, where it is not the tracker's own name (accelerate's is_*_available checks).
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX")}


def known_trackers() -> list[str]:
    """The tracker names accelerate supports (its `LOGGER_TYPE_TO_CLASS`), read from its source without importing
    it (importing accelerate imports torch)."""
    spec = importlib.util.find_spec("accelerate")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("`log_with` needs accelerate, which is not installed.")
    source = Path(next(iter(spec.submodule_search_locations))) / "tracking.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LOGGER_TYPE_TO_CLASS"
                                                for t in node.targets) and isinstance(node.value, ast.Dict):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    raise AssertionError(f"no LOGGER_TYPE_TO_CLASS table in {source}")  # accelerate changed: read it differently


def check_trackers(cfg: BenchmarkConfig) -> None:
    """Every `log_with` name is a tracker accelerate supports and its package is installed (accelerate itself
    skips an unavailable tracker silently). Imports no model library."""
    names = cfg.tracking.names()
    if not names:
        return
    known = known_trackers()
    for name in names:
        if name not in known:
            raise ConfigError(f"`log_with`: unknown tracker {name!r}{suggest(name, known)}; accelerate supports: "
                              f"{', '.join(sorted(known))}.")
        packages = _PACKAGES.get(name, (name,))
        if not any(importlib.util.find_spec(package) is not None for package in packages):
            raise ConfigError(f"`log_with`: tracker {name!r} needs the package {packages[0]!r}, which is not "
                              f"installed (pip install {packages[0]}).")
    if "wandb" in names and not wandb_can_log():
        raise ConfigError("`log_with`: wandb has no API key (set WANDB_API_KEY or run `wandb login`), and it is not "
                          "offline (WANDB_MODE=offline logs to local files, `wandb sync` uploads them later).")


def wandb_can_log() -> bool:
    """W&B can log without asking: offline or disabled (WANDB_MODE, or `wandb offline`'s settings file), or an API
    key in WANDB_API_KEY or in the netrc entry `wandb login` writes for its host. No network, no wandb import."""
    import configparser
    import netrc
    import os
    from urllib.parse import urlparse

    settings = configparser.ConfigParser()
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path("~/.config/wandb").expanduser())
    try:
        settings.read([config_dir / "settings", Path(os.environ.get("WANDB_DIR") or ".") / "wandb" / "settings"])
    except (configparser.Error, OSError, UnicodeDecodeError):
        pass  # an unreadable settings file sets nothing: the checks below decide
    mode = os.environ.get("WANDB_MODE") or settings.get("default", "mode", fallback="")
    if mode.strip().lower() in ("offline", "dryrun", "disabled") or os.environ.get("WANDB_API_KEY", "").strip():
        return True
    base = os.environ.get("WANDB_BASE_URL") or settings.get("default", "base_url", fallback="https://api.wandb.ai")
    host = urlparse(base).hostname or base
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def tracker_config(cfg: BenchmarkConfig) -> dict[str, Any]:
    """The run's settings as a tracker's hyperparameters: scalars as they are, anything else as JSON text."""
    out = {}
    for key, value in cfg.to_dict().items():
        out[key] = value if isinstance(value, (bool, int, float, str)) or value is None else json.dumps(value)
    return {k: ("" if v is None else v) for k, v in out.items()}


def log_folder(accelerator: Any, folder: Path, *, step: int, samples: list) -> None:
    """Main process: log one output folder's report (report.json, results.jsonl) at `step` into every tracker
    of `accelerator` (see the module's docstring). `samples`: the run's samples, in dataset order."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    values = scalars(report)
    table = category_table(report)
    picked = sample_rows(rows, samples, folder)
    for tracker in accelerator.trackers:  # one tracker's failure is a warning naming it; the others still log
        try:
            tracker.log(values, step=step)
            if tracker.name == "wandb":
                _log_wandb(tracker, table, picked, step)
            elif tracker.name == "tensorboard":
                _log_tensorboard(tracker, table, picked, step)
        except Exception as err:  # the trackers are an extra: the run's own reports are written
            logger.warning("tracker %s: logging %s failed (%s: %s)", tracker.name, folder, type(err).__name__,
                           " ".join(str(err).split())[:300])


def _metric_names(entry: dict[str, Any]) -> list[str]:
    return list(entry.get("metrics") or {"score": None})


def scalars(report: dict[str, Any]) -> dict[str, float]:
    """`eval/<metric>` (overall mean), `eval/<metric>_ci_low` / `_ci_high` (its 95% interval),
    `eval/<category>/<metric>`, and the counts; metrics without a value (nothing scored) are left out."""
    out: dict[str, float] = {}

    def add(prefix: str, entry: dict[str, Any]) -> None:
        metrics = entry.get("metrics") or {"score": {"mean": entry.get("mean"), "ci95": entry.get("ci95")}}
        for name, stats in metrics.items():
            if stats.get("mean") is not None:
                out[f"{prefix}{name}"] = float(stats["mean"])
            if stats.get("ci95"):
                out[f"{prefix}{name}_ci_low"], out[f"{prefix}{name}_ci_high"] = map(float, stats["ci95"])

    add("eval/", report["overall"])
    out["eval/count"] = float(report["overall"].get("count", 0))
    out["eval/failed"] = float(report["overall"].get("failed", 0))
    for category, entry in report.get("categories", {}).items():
        add(f"eval/{category}/", entry)
    return out


def category_table(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The per-category table (and the overall row): columns, rows."""
    metrics = _metric_names(report["overall"])
    columns = ["category", "count", "failed", *[f"{m}{suffix}" for m in metrics for suffix in ("", "_ci_low",
                                                                                                 "_ci_high")]]
    rows = []
    for name, entry in [*report.get("categories", {}).items(), ("overall", report["overall"])]:
        row: list[Any] = [name, entry.get("count", 0), entry.get("failed", 0)]
        for metric in metrics:
            stats = (entry.get("metrics") or {}).get(metric) or {"mean": entry.get("mean"), "ci95": entry.get("ci95")}
            ci = stats.get("ci95") or [None, None]
            row += [stats.get("mean"), ci[0], ci[1]]
        rows.append(row)
    return columns, rows


def sample_rows(rows: list[dict], samples: list, folder: Path) -> list[dict[str, Any]]:
    """The first `SAMPLE_IMAGES` rows with an edit: id, category, instruction, the source and edited images, the
    status and every metric's score."""
    by_id = {s.id: s for s in samples}
    out = []
    for row in rows:
        if len(out) == SAMPLE_IMAGES:
            break
        if not row.get("edited_image") or row["id"] not in by_id:
            continue
        from PIL import Image

        with Image.open(folder / row["edited_image"]) as image:
            edit = image.convert("RGB")
        out.append({"id": row["id"], "category": row.get("category"), "instruction": row.get("instruction"),
                    "source": by_id[row["id"]].source_image.load().convert("RGB"), "edit": edit,
                    "status": row["status"], "metrics": dict(row.get("metrics") or {"score": row.get("score")})})
    return out


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _log_wandb(tracker: Any, table: tuple[list[str], list[list[Any]]], picked: list[dict], step: int) -> None:
    import wandb

    tracker.log_table("eval/categories", columns=table[0], data=table[1], step=step)
    if picked:
        metrics = list(dict.fromkeys(m for p in picked for m in p["metrics"]))
        data = [[p["id"], p["category"], p["instruction"], wandb.Image(p["source"]), wandb.Image(p["edit"]),
                 p["status"], *[p["metrics"].get(m) for m in metrics]] for p in picked]
        tracker.log_table("eval/samples", columns=["id", "category", "instruction", "source", "edit", "status",
                                                   *metrics], data=data, step=step)


def _log_tensorboard(tracker: Any, table: tuple[list[str], list[list[Any]]], picked: list[dict], step: int) -> None:
    import numpy as np

    columns, rows = table
    markdown = "\n".join([f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}",
                          *[f"| {' | '.join(_cell(v) for v in row)} |" for row in rows]])
    writer = tracker.writer
    writer.add_text("eval/categories", markdown, global_step=step)
    for p in picked:
        source = p["source"].resize(p["edit"].size) if p["source"].size != p["edit"].size else p["source"]
        pair = np.concatenate([np.asarray(source), np.asarray(p["edit"])], axis=1)  # source | edit
        writer.add_image(f"eval/samples/{p['id']}", pair, global_step=step, dataformats="HWC")
        scores = ", ".join(f"{m} {_cell(v)}" for m, v in p["metrics"].items())
        writer.add_text(f"eval/samples/{p['id']}", f"{p['instruction']} ({p['status']}: {scores})", global_step=step)
    writer.flush()
