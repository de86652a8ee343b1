"""Checks that need no model library, run on every process before the process group and before torch, so a
user's mistake is one line and exit code 2 within a second or two:

- the output folder can be one (not a file, not inside a local dataset folder);
- every `log_with` tracker is one accelerate supports, with its package installed;
- the judge's rubrics can be read and `category_map` names the protocol's dimensions;
- the model names: `tiny:` names exist, a local folder exists, a hub id is cached or reachable, exists and is
  not gated (the backends' own `preflight`; one request each, no retries);
- the dataset: a local path must exist (it is never sent to the hub), a hub id must be usable; a local
  dataset is read whole here (text fields and image headers' existence, not pixels), so its problems
  (missing columns, duplicate ids, no usable sample) come now, and the samples are handed to the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from .config import BenchmarkConfig, ConfigError
from .data import Sample, check_dataset_name, load_benchmark
from .judges import Rubrics
from .protocols import make_protocol, resolve_protocol
from .registry import EDITORS, JUDGES
from .store import OWNED, RUN_FILE
from .sweep import SWEEP_CHART, SWEEP_JSON, SWEEP_MD, expand
from .tracking import check_trackers


def check_output_dir(cfg: BenchmarkConfig) -> None:
    """The output folder can be one: not an existing file, and not inside a local dataset folder (the run's
    own files would change the data's identity, so the run could never resume, and an imagefolder would
    even read them as samples). A manifest's folder is fine: a manifest is identified by its own content. Nor is
    the dataset among the files the run writes there (the run would replace it, and --overwrite delete it)."""
    output = Path(cfg.run.output_dir)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} is a file, not a folder.")
    if cfg.sweep.sweep and (output / RUN_FILE).exists():
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} holds a single run: a sweep needs a folder of its "
                          "own (its variants go in subfolders).")
    if not cfg.sweep.sweep and (output / SWEEP_JSON).exists():
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} holds a sweep: give a variant's subfolder, or "
                          "another folder, for a single run.")
    logs = output / "logs"  # the trackers' default folder: they write through a link in its place
    if cfg.tracking.names() and not cfg.tracking.logging_dir and logs.is_symlink():
        raise ConfigError(f"{logs} is a symbolic link: the trackers' files (`log_with`) would be written through it, "
                          "out of output_dir. Remove it, or name the folder with `logging_dir`.")
    dataset = Path(cfg.data.dataset)
    if dataset.is_dir() and output.resolve().is_relative_to(dataset.resolve()):
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} is inside the dataset folder {cfg.data.dataset!r}: "
                          "put it somewhere else (the run's files would change the dataset).")
    for key, path in _named_paths(cfg):  # the data, an adapter, a model or rubric folder, pre-computed edits ...
        if among_run_files(cfg, path):
            raise ConfigError(f"`{key}` {str(path)!r} is inside `output_dir` {cfg.run.output_dir!r}, among the files "
                              "the run writes (and --overwrite deletes): move it out, or use another output_dir.")


def _named_paths(cfg: BenchmarkConfig) -> Iterator[tuple[str, Path]]:
    """(key, path) for every option value that names an existing file or folder (in a list or mapping too, and a
    sweep's NAME=PATH), except the output and tracker folders themselves."""
    def paths(value: Any) -> Iterator[Path]:
        if isinstance(value, str):
            for text in dict.fromkeys((value, value.partition("=")[2])):
                try:
                    if text and Path(text).expanduser().exists():
                        yield Path(text)
                except (OSError, ValueError):  # not a path this system can name (too long, a NUL)
                    continue
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from paths(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from paths(item)

    for section in cfg.sections().values():
        for field in dataclasses.fields(section):
            if field.name not in ("output_dir", "logging_dir"):
                yield from ((field.name, path) for path in paths(getattr(section, field.name)))


def among_run_files(cfg: BenchmarkConfig, path: Path) -> bool:
    """Whether `path` (links resolved) lies among what the run writes in output_dir, and --overwrite deletes: its
    files and folders (edits/, records/, results.jsonl, ...); a sweep's: those of each variant's folder, and its
    report and chart at the top."""
    try:
        parts = path.expanduser().resolve().relative_to(Path(cfg.run.output_dir).expanduser().resolve()).parts
    except ValueError:
        return False
    return bool(parts) and (parts[0] in OWNED or bool(cfg.sweep.sweep) and (
        parts[0] in (SWEEP_JSON, SWEEP_MD, SWEEP_CHART) or len(parts) > 1 and parts[1] in OWNED))


def check_inputs_outside_outputs(cfg: BenchmarkConfig, samples: list[Sample]) -> None:
    """No image file the data names (a source, a reference, a pre-computed edit of the `edited_image` column) lies
    among what the run writes in output_dir (edits/, baselines/, ...; a sweep: in each variant's folder, and its
    report and chart at the top): the run would write its PNGs over them, and --overwrite delete them before they
    are read (a run re-judged in place from a manifest that names its own edits)."""
    for sample in samples:
        for ref in (*sample.sources, sample.reference_image, sample.edited_image):
            path = getattr(ref, "path", None)
            if path is not None and among_run_files(cfg, Path(path)):
                raise ConfigError(f"sample {sample.id!r}: the image {str(path)!r} is inside `output_dir` "
                                  f"{cfg.run.output_dir!r}, among the files the run writes (and --overwrite "
                                  "deletes): copy the images out of it, or use another output_dir.")


def preflight(cfg: BenchmarkConfig, *, editor: bool = True) -> Optional[tuple[list[Sample], str]]:
    """Run the checks; returns (samples, dataset identity) of a local dataset, or None for a hub dataset (the
    run loads it on the main process first, so one process downloads it). `editor=False`: the editor is an
    object in memory (the Python API's `pipeline`): its model name is not checked."""
    check_output_dir(cfg)
    check_trackers(cfg)
    if editor:
        EDITORS.get(cfg.editor.editor).preflight(cfg.editor_backend, cfg)
    if cfg.sweep.sweep:
        for variant in expand(cfg, announce=True):  # every variant's adapter or pipeline can be found
            try:
                EDITORS.get(variant.cfg.editor.editor).preflight(variant.cfg.editor_backend, variant.cfg)
            except ConfigError as err:
                raise ConfigError(f"sweep variant {variant.name!r}: {err}") from None
    JUDGES.get(cfg.judge.judge).preflight(cfg.judge_backend, cfg)
    check_dataset_name(cfg.data)
    loaded = load_benchmark(cfg.data) if Path(cfg.data.dataset).expanduser().exists() else None
    if loaded is not None:
        check_inputs_outside_outputs(cfg, loaded[0])
        resolve_protocol(cfg.judge, loaded.format)  # `protocol: auto`: the data's format's protocol
    if cfg.judge.protocol != "auto":  # (a hub dataset with `auto`: checked when the run has read it)
        # the rubrics read, `category_map` names dimensions, the benchmark's prompt file read and pinned
        make_protocol(cfg.judge, Rubrics(cfg.judge.prompts_dir))
    return loaded
