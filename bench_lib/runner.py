"""The two-stage benchmark run: edit every sample, switch models, judge every edit, report.

```
rank r of N: load + validate samples; read the records of earlier attempts (resume)
  stage 1: own shard of the samples without a usable edit (contiguous, no padding); the same number of
           batches on every rank: edit → save PNG → append records; barrier after each batch
  switch:  free the editor completely; load the judge
  stage 2: own shard of the ok edits without an ok judgement (then of each sanity baseline's images),
           in left-padded batches of similar prompt length → append records
  gather small JSON records ─► rank 0 writes results.jsonl, baselines/, report.json, report.md, the
           chart and gallery.html
```
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import math
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate.logging import get_logger
from PIL import Image
from tqdm.auto import tqdm

from .config import BenchmarkConfig, ConfigError
from .data import ImageRef, Sample, load_benchmark
from .distributed import Distributed
from .editors import EDITORS, Editor, free_memory, load_editor
from .judges import JUDGES, Judge, Judgement, JudgeRequest, Rubrics, load_judge
from .gallery import GALLERY_FILE, write_gallery
from .provenance import (collect as collect_provenance, device_name, harness_commit, models as model_provenance,
                         package_versions)
from .report import CHART_FILE, build_report, render_markdown, timing_summary, write_chart
from .scoring import FORMULA_TEXT, combine
from .store import (BASELINES_DIR, REPORT_FILE, RESULTS_FILE, RUN_FILE, RunFolder, edit_path, jsonl_text, load_png,
                    result_row, sample_seed, save_png, sha256_text, write_json, write_text)
from .tiny import BUILDERS as TINY_BUILDERS, TINY_PREFIX

logger = get_logger(__name__)  # accelerate's: main process only unless a call says otherwise
SCORING_VERSION = 2  # bump when a change to the harness changes scores: old run folders then refuse to resume
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # the run can't write: stop every rank


@dataclass
class Outcome:
    """What happened to one sample on its rank."""

    status: str = "ok"
    edited_image: Optional[str] = None
    error: Optional[str] = None
    flags: list[str] = field(default_factory=list)  # suspicious edit output; the sample is still judged
    judgement: Optional[Judgement] = None


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def check_models(cfg: BenchmarkConfig) -> None:
    """Before the edit stage: both models exist and the editor takes `editor_kwargs` (downloads only
    small config files; builds tiny models on first use). A typo is exit code 2, not a lost edit stage."""
    EDITORS[cfg.editor.editor].check(cfg.editor, trust_remote_code=cfg.run.trust_remote_code)
    JUDGES[cfg.judge.judge].check(cfg.judge, trust_remote_code=cfg.run.trust_remote_code)


def check_backends(cfg: BenchmarkConfig) -> None:
    """Backend and tiny-model names are checked before anything is loaded (a typo is exit code 2)."""
    if cfg.editor.editor not in EDITORS:
        raise ConfigError(f"unknown editor backend {cfg.editor.editor!r}; known: {sorted(EDITORS)}")
    if cfg.judge.judge not in JUDGES:
        raise ConfigError(f"unknown judge backend {cfg.judge.judge!r}; known: {sorted(JUDGES)}")
    for key, model in (("editor_model", cfg.editor.editor_model), ("judge_model", cfg.judge.judge_model)):
        if model.startswith(TINY_PREFIX) and model.removeprefix(TINY_PREFIX) not in TINY_BUILDERS:
            raise ConfigError(f"`{key}`: unknown tiny model {model!r}; known: "
                              f"{[TINY_PREFIX + name for name in TINY_BUILDERS]}")


def edit_sample(editor: Editor, sample: Sample, *, seed: int, output_dir: Path) -> Outcome:
    if sample.problem:
        return Outcome(status="invalid_input", error=sample.problem)
    try:
        source = sample.source_image.load()
    except Exception as err:  # unreadable input is the sample's failure, not the run's
        return Outcome(status="invalid_input", error=f"cannot read source image {sample.source_image.describe()}: "
                                                     f"{_error_text(err)}")
    if sample.reference_image is not None:  # the judge needs it: find out now, not after a GPU-minute edit
        try:
            sample.reference_image.load()
        except Exception as err:
            return Outcome(status="invalid_input", error=f"cannot read reference image "
                                                         f"{sample.reference_image.describe()}: {_error_text(err)}")
    relative = edit_path(sample.id)
    failure = None
    try:
        result = editor.edit(source, sample.instruction, seed=seed)
        if not isinstance(result.image, Image.Image):
            raise TypeError(f"the editor returned {type(result.image).__name__}, not a PIL image")
        flags = list(result.flags)
        if all(low == high for low, high in result.image.getextrema()):
            flags.append("constant_image")  # one colour everywhere: the edit almost surely failed
        save_png(result.image, output_dir / relative)
    except Exception as err:
        if _is_fatal(err):
            raise
        logger.warning("edit of %r failed:\n%s", sample.id, traceback.format_exc(), main_process_only=False)
        failure = _error_text(err)
    if failure is not None:
        free_memory()  # outside the except block: its traceback no longer pins the failed call's tensors
        return Outcome(status="edit_failed", error=failure)
    return Outcome(edited_image=relative, flags=flags)


def _is_fatal(err: BaseException) -> bool:
    """Errors after which no later sample can succeed: the run stops instead of failing every sample."""
    if isinstance(err, OSError) and err.errno in FATAL_ERRNOS:
        return True  # the output folder can't be written
    # A CUDA error other than out-of-memory (illegal address, device-side assert) breaks the context.
    return isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError) and "CUDA error" in str(err)


def _judge_request(sample: Sample, edited: Image.Image, max_pixels: int) -> JudgeRequest:
    reference = sample.reference_image.load() if sample.reference_image is not None else None
    return JudgeRequest(
        category=sample.category,
        instruction=sample.instruction,
        source=fit_pixels(sample.source_image.load(), max_pixels),
        edited=fit_pixels(edited, max_pixels),
        reference_text=sample.reference_text,
        reference_image=fit_pixels(reference, max_pixels) if reference is not None else None,
    )


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (aspect kept, high-quality filter) to at most `max_pixels`; smaller images are unchanged."""
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def judge_batch(judge: Judge, batch: list[Sample], outcomes: dict[str, Outcome],
                load_edited: Callable[[Sample], Image.Image], *, max_pixels: int) -> None:
    """Score a batch in one call; if that fails, score its samples one by one to isolate the culprit."""
    requests, ready = [], []
    for sample in batch:
        try:
            requests.append(_judge_request(sample, load_edited(sample), max_pixels))
            ready.append(sample)
        except Exception as err:
            outcomes[sample.id].status = "invalid_input"
            outcomes[sample.id].error = f"cannot read an image for judging: {_error_text(err)}"
    if not ready:
        return
    failure = None
    try:
        judgements = judge.score(requests)
        if len(judgements) != len(ready):  # a judge backend bug: never pair judgements with the wrong samples
            raise RuntimeError(f"the judge returned {len(judgements)} judgements for {len(requests)} requests")
    except Exception as err:
        if _is_fatal(err):
            raise
        logger.warning("judging %s failed:\n%s", [s.id for s in ready], traceback.format_exc(),
                       main_process_only=False)
        failure = _error_text(err)
    if failure is not None:
        free_memory()  # outside the except block, so the failed batch's tensors can go
        if len(ready) == 1:
            outcomes[ready[0].id].status, outcomes[ready[0].id].error = "judge_failed", failure
            return
        for sample in ready:  # one at a time, so only the culprit fails
            judge_batch(judge, [sample], outcomes, load_edited, max_pixels=max_pixels)
        return
    for sample, judgement in zip(ready, judgements):
        outcome = outcomes[sample.id]
        outcome.judgement = judgement
        if judgement.error is None and not judgement.subscores:
            judgement.error = "the judge returned no sub-scores"
        if judgement.error is not None:  # unparseable twice, or NaN/inf: never a score
            outcome.status, outcome.error = "judge_failed", judgement.error


def length_batches(lengths: list[float], batch_size: int) -> list[list[int]]:
    """Batches of indices, with items of similar length together (less left padding, less wasted compute).
    Ties keep their original order, so the batching is deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def judge_length(sample: Sample, edited_size: tuple[int, int], rubrics: Rubrics, max_pixels: int) -> float:
    """An estimate of the judge prompt's length in tokens, from image headers and text lengths: a vision
    token per 32x32 pixels (Qwen3-VL; 28x28 for Qwen2.5-VL), a text token per ~4 characters."""
    sizes = [ref.size() for ref in (sample.source_image, sample.reference_image) if ref is not None]
    pixels = sum(min(width * height, max_pixels) for width, height in [*sizes, edited_size])
    text = len(rubrics.templates[rubrics.rubric_name(sample.category)]) + len(sample.instruction) \
        + len(sample.reference_text or "")
    return pixels / 1024 + text / 4


@dataclass
class JudgeJob:
    """Images of one kind to judge: the editor's edits, or a sanity baseline's (computed from the source)."""

    name: str  # "editor" or a baseline's name
    samples: list[Sample]
    load_edited: Callable[[Sample], Image.Image]
    edited_size: Callable[[Sample], tuple[int, int]]

    @property
    def record_kind(self) -> str:
        return "judge" if self.name == EDITOR_JOB else f"baseline-{self.name}"


EDITOR_JOB = "editor"


def judge_jobs(cfg: BenchmarkConfig, folder: RunFolder, to_judge: list[Sample], edits: dict[str, dict],
               baselines: dict[str, list[Sample]]) -> list[JudgeJob]:
    jobs = [JudgeJob(EDITOR_JOB, to_judge, lambda s: load_png(folder.root / edits[s.id]["edited_image"]),
                     lambda s: ImageRef(path=folder.root / edits[s.id]["edited_image"]).size())]
    for name, samples in baselines.items():
        editor = EDITORS[name](dataclasses.replace(cfg.editor, editor=name, editor_kwargs={}), device=torch.device("cpu"))
        jobs.append(JudgeJob(name, samples, lambda s, e=editor: e.edit(s.source_image.load(), s.instruction, seed=0).image,
                             lambda s: s.source_image.size()))  # both baselines keep the source's size
    return jobs


def run_fingerprint(cfg: BenchmarkConfig, dataset_identity: str, rubrics: Rubrics) -> dict[str, Any]:
    """Everything a result depends on. Not in it: limit, batch sizes, process count, output folder, timeout,
    and the score formula (applied to the recorded sub-scores when results are written)."""
    keys = ("dataset_split", "max_image_pixels", "editor", "editor_model", "editor_revision", "editor_dtype",
            "editor_kwargs", "seed", "judge", "judge_model", "judge_revision", "judge_dtype", "judge_max_pixels",
            "judge_min_digit_mass", "judge_mode")
    flat = cfg.to_dict()
    # The data is identified by its content, not by how it was named (a relative or absolute path).
    columns = {k: v for k, v in cfg.data.columns.items() if k != v}
    fingerprint = {**{k: flat[k] for k in keys}, "dataset_content": dataset_identity, "columns": columns,
                   "rubrics": rubrics.hashes(), "scoring": SCORING_VERSION}
    if cfg.judge.judge_mode == "generate":  # the answer's length limit only matters when the judge writes
        fingerprint["judge_max_new_tokens"] = cfg.judge.judge_max_new_tokens
    return fingerprint


def check_output_dir(cfg: BenchmarkConfig) -> None:
    """The output folder can be one: not an existing file, and not inside a local dataset folder (the run's
    own files would change the data's identity, so the run could never resume, and an imagefolder would
    even read them as samples). A manifest's folder is fine: a manifest is identified by its own content."""
    output = Path(cfg.run.output_dir)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} is a file, not a folder.")
    dataset = Path(cfg.data.dataset)
    if dataset.is_dir() and output.resolve().is_relative_to(dataset.resolve()):
        raise ConfigError(f"`output_dir` {cfg.run.output_dir!r} is inside the dataset folder {cfg.data.dataset!r}: "
                          "put it somewhere else (the run's files would change the dataset).")


def run(cfg: BenchmarkConfig) -> Path:
    """Run (or resume) the benchmark on every rank; rank 0 writes the outputs. Returns the output folder."""
    check_backends(cfg)
    check_output_dir(cfg)
    dist = Distributed(timeout_s=cfg.run.process_group_timeout)  # first: its timeout must win
    folder = RunFolder(Path(cfg.run.output_dir))
    try:
        return _run(cfg, dist, folder)
    finally:
        folder.lock.release()  # main process: held since it planned the attempt


def _lock(folder: RunFolder) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    folder.lock.acquire()


def _run(cfg: BenchmarkConfig, dist: Distributed, folder: RunFolder) -> Path:
    dist.on_main(lambda: _lock(folder))  # before anything is loaded, and before any rank writes
    if cfg.run.overwrite and _slurm_restarts() > 0:
        # A requeued SLURM job reruns the same command: `overwrite` would wipe what its first start did.
        logger.warning("SLURM restart %d of this job: resuming the run; `overwrite` is ignored", _slurm_restarts())
        cfg.run.overwrite = False
    started = dt.datetime.now(dt.timezone.utc)
    if not dist.is_main:  # one set of progress bars per run, from the main process
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()

    samples, dataset_identity = dist.main_first(lambda: load_benchmark(cfg.data))
    dist.main_first(lambda: check_models(cfg), local=True)
    rubrics = Rubrics(cfg.judge.prompts_dir)
    _log_input_problems(samples, rubrics)
    fingerprint = run_fingerprint(cfg, dataset_identity, rubrics)
    # The main process reads the folder and shares one plan, so every rank (every node, whatever its
    # filesystem cache shows) works from the same records.
    baseline_names = cfg.editor.baseline_names()
    attempt, edits, judgements, reusable, baseline_records = dist.on_main(
        lambda: _plan(cfg, folder, fingerprint, samples, cfg.run.overwrite, baseline_names, dist.world_size))
    _check_shared_folder(dist, folder, attempt)
    timings: dict[str, float] = {}

    # Stage 1: edit what has no usable edit yet (a resumed run skips the rest).
    to_edit = [s for s in samples if s.id not in reusable]
    new_edits = edit_stage(cfg, dist, to_edit, folder, attempt, timings)
    for record in dist.all_gather(new_edits):
        edits[record["id"]] = record
        judgements.pop(record["id"], None)  # a new image needs a new judgement

    # Stage 2: judge every ok edit without an ok judgement (and the sanity baselines' images, if asked).
    to_judge = [s for s in samples if edits[s.id]["status"] == "ok"
                and judgements.get(s.id, {}).get("status") != "ok"]
    baselines_to_judge = {name: [s for s in samples if not s.problem
                                 and baseline_records[name].get(s.id, {}).get("status") != "ok"]
                          for name in baseline_names}
    jobs = judge_jobs(cfg, folder, to_judge, edits, baselines_to_judge)
    plan = dist.on_main(lambda: plan_judge_batches(jobs, rubrics, batch_size=cfg.judge.judge_batch_size,
                                                   max_pixels=cfg.judge.judge_max_pixels))
    new_judgements = judge_stage(cfg, dist, jobs, plan, folder, attempt, timings)
    gathered = {job.name: dist.gather(new_judgements[job.name]) for job in jobs}  # same order on every rank
    per_rank = dist.gather([{"timings": timings, "device": device_name(dist.device)}])
    if dist.is_main:
        judgements.update({r["id"]: r for r in gathered[EDITOR_JOB]})
        rows = [_row(s, edits[s.id], judgements.get(s.id), cfg, rubrics) for s in samples]
        baseline_rows = {}
        for name in baseline_names:
            baseline_records[name].update({r["id"]: r for r in gathered[name]})
            baseline_rows[name] = [_baseline_row(s, baseline_records[name].get(s.id), cfg, rubrics) for s in samples]
        resumed = {"attempt": attempt, "reused_edits": len(samples) - len(to_edit),
                   "reused_judgements": sum(edits[s.id]["status"] == "ok" for s in samples) - len(to_judge)}
        _write_outputs(cfg, folder, rows, per_rank, world_size=dist.world_size, started=started,
                       resumed=resumed, baseline_rows=baseline_rows, samples=samples, rubrics=rubrics)
        statuses = Counter(row["status"] for row in rows)
        log = logger.info if statuses["ok"] == len(rows) else logger.warning
        log("statuses: %s; wrote %s", dict(statuses), folder.root / "report.md")
    dist.barrier()
    dist.close()
    return folder.root


def _slurm_restarts() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def _plan(cfg: BenchmarkConfig, folder: RunFolder, fingerprint: dict, samples: list[Sample], overwrite: bool,
          baseline_names: list[str], world_size: int):
    """Start the next attempt; return it with the earlier records, the ids whose edits can be reused, and
    the earlier judgements of each sanity baseline."""
    versions = package_versions()
    changed = folder.versions_changed(versions) if not overwrite else {}
    if changed:
        logger.warning("library versions differ from the previous attempt's, so redone edits may differ "
                       "slightly from kept ones: %s", changed)
    info = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "world_size": world_size,
            "harness": harness_commit(), "models": model_provenance(cfg)}
    attempt = folder.prepare(fingerprint, overwrite=overwrite, versions=versions, info=info)
    edits, judgements = folder.read_records()  # earlier attempts only: this one has written nothing yet
    reusable = {s.id for s in samples if folder.edit_is_reusable(edits.get(s.id))}
    baselines = {name: folder.read_baseline_records(name) for name in baseline_names}
    return attempt, edits, judgements, reusable, baselines


def _check_shared_folder(dist: Distributed, folder: RunFolder, attempt: int, wait_s: float = 10.0) -> None:
    """Every rank must see the run file the main process just wrote: outputs need one shared folder."""
    deadline = time.monotonic() + wait_s
    while True:
        seen = folder.recorded_attempt() == attempt
        if seen or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    blind = [rank for rank, ok in enumerate(dist.all_gather([seen])) if not ok]
    if blind:
        raise ConfigError(f"rank(s) {blind} can't see {folder.root / RUN_FILE}: output_dir must be one folder "
                          "that every process (every node) shares.")


def _log_input_problems(samples: list[Sample], rubrics: Rubrics) -> None:
    no_rubric = sorted({s.category for s in samples if s.category and rubrics.rubric_name(s.category) == "default"}
                       - {"default"})
    if no_rubric:
        logger.warning("categories without their own rubric use default.txt: %s", no_rubric)
    invalid = [s for s in samples if s.problem]
    if invalid:
        logger.warning("%d of %d samples are invalid_input and will not be edited, e.g. %r: %s",
                       len(invalid), len(samples), invalid[0].id, invalid[0].problem)


def edit_stage(cfg: BenchmarkConfig, dist: Distributed, to_edit: list[Sample], folder: RunFolder, attempt: int,
               timings: dict[str, float]) -> list[dict[str, Any]]:
    """Edit this rank's share of `to_edit` in lockstep batches; returns (and records) its edit records."""
    shard = dist.shard(to_edit)
    shard_sizes = dist.shard_sizes(len(shard))
    batch_size = cfg.editor.edit_batch_size
    # Every rank runs the largest shard's number of batches, so all ranks meet at every barrier.
    num_batches = math.ceil(max(shard_sizes) / batch_size)
    logger.info("editing %d samples on %d process(es), shards %s; %d batches of up to %d per rank",
                len(to_edit), dist.world_size, shard_sizes, num_batches, batch_size)
    writer = folder.record_writer(attempt, "edit", dist.rank)
    records: list[dict[str, Any]] = []
    editor: Optional[Editor] = None
    timings["load_editor"] = timings["barrier_wait"] = 0.0
    started = time.perf_counter()
    for b in tqdm(range(num_batches), desc="edit (batches)", disable=not dist.is_main):
        batch_records = []
        for sample in shard[b * batch_size:(b + 1) * batch_size]:
            if editor is None and not sample.problem:  # load only on a rank that has something to edit
                t0 = time.perf_counter()
                editor = load_editor(cfg.editor, device=dist.device, trust_remote_code=cfg.run.trust_remote_code)
                timings["load_editor"] += time.perf_counter() - t0
            outcome = edit_sample(editor, sample, seed=sample_seed(cfg.run.seed, sample.id), output_dir=folder.root)
            batch_records.append({**_edit_record(sample.id, outcome, folder.root), "attempt": attempt})
        writer.write(batch_records)  # on disk before the barrier: a crash after it loses nothing
        records += batch_records
        t0 = time.perf_counter()
        dist.barrier()
        timings["barrier_wait"] += time.perf_counter() - t0
    timings["edit"] = time.perf_counter() - started - timings["load_editor"]
    timings["edited"] = sum(r["status"] != "invalid_input" for r in records)

    # The editor must be gone before the judge takes its memory.
    t0 = time.perf_counter()
    if editor is not None:
        editor.close()
        del editor
    timings["switch"] = time.perf_counter() - t0
    return records


def plan_judge_batches(jobs: list[JudgeJob], rubrics: Rubrics, *, batch_size: int,
                       max_pixels: int) -> dict[str, list[list[int]]]:
    """Main process: every job's batches (indices into its samples) over ALL ranks' work, of similar
    estimated prompt length. A batch's composition then doesn't depend on the number of processes, and
    neither do the scores (which batch composition moves: the last bits in fp32, more in bf16). Bitwise
    equal on 1 and 2 processes in tests/test_multiprocess.py (fp32, CPU)."""
    return {job.name: length_batches([_safe_length(s, job, rubrics, max_pixels) for s in job.samples], batch_size)
            for job in jobs}


def deal(batches: list, world_size: int) -> list:
    """The batches in the order that makes accelerate's contiguous split deal them round-robin: rank r gets
    batches r, r + W, r + 2W, ... (each rank a mix of short and long prompts)."""
    return [batches[i] for rank in range(world_size) for i in range(rank, len(batches), world_size)]


def judge_stage(cfg: BenchmarkConfig, dist: Distributed, jobs: list[JudgeJob], plan: dict[str, list[list[int]]],
                folder: RunFolder, attempt: int, timings: dict[str, float]) -> dict[str, list[dict[str, Any]]]:
    """Judge this rank's batches of every job (`plan`, the same on every rank) in left-padded batches;
    returns (and records) the judge records of each job, in dataset order."""
    mine = {job.name: dist.shard(deal(plan[job.name], dist.world_size)) for job in jobs}
    t0 = time.perf_counter()
    judge = None
    if any(mine.values()):  # load only on a rank that has something to judge
        judge = load_judge(cfg.judge, device=dist.device, device_map=dist.judge_device_map(),
                           trust_remote_code=cfg.run.trust_remote_code)
    timings["switch"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    out: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        writer = folder.record_writer(attempt, job.record_kind, dist.rank)
        records: list[dict[str, Any]] = []
        for batch_indices in tqdm(mine[job.name], desc=f"judge {job.name} (batches)", disable=not dist.is_main):
            batch = [job.samples[i] for i in batch_indices]
            outcomes = {s.id: Outcome() for s in batch}
            judge_batch(judge, batch, outcomes, job.load_edited, max_pixels=cfg.judge.judge_max_pixels)
            batch_records = [{**_judge_record(s.id, outcomes[s.id]), "attempt": attempt} for s in batch]
            writer.write(batch_records)
            records += batch_records
        position = {s.id: i for i, s in enumerate(job.samples)}
        out[job.name] = sorted(records, key=lambda r: position[r["id"]])  # back to dataset order
    if judge is not None:
        judge.close()
        del judge
    timings["judge"] = time.perf_counter() - t0
    timings["judged"] = sum(len(batch) for batches in mine.values() for batch in batches)
    return out


def _safe_length(sample: Sample, job: JudgeJob, rubrics: Rubrics, max_pixels: int) -> float:
    try:
        return judge_length(sample, job.edited_size(sample), rubrics, max_pixels)
    except Exception:  # an unreadable image fails when the sample is judged, with its own error
        return 0.0


def _edit_record(sample_id: str, outcome: Outcome, output_dir: Path) -> dict[str, Any]:
    record = {"id": sample_id, "status": outcome.status, "edited_image": outcome.edited_image,
              "error": outcome.error, "flags": outcome.flags}
    if outcome.status == "ok":
        record["size"] = (output_dir / outcome.edited_image).stat().st_size
    return record


def _judge_record(sample_id: str, outcome: Outcome) -> dict[str, Any]:
    judgement = outcome.judgement or Judgement()  # None: the judge never answered (an exception or bad input)
    return {"id": sample_id, "status": outcome.status, "error": outcome.error,
            "subscores": judgement.subscores, "rationale": judgement.rationale,
            "parse": judgement.parse if outcome.judgement is not None else None,
            "raw": judgement.raw, "digit_mass": judgement.digit_mass}


def _row(sample: Sample, edit: dict, judgement: Optional[dict], cfg: BenchmarkConfig,
         rubrics: Rubrics) -> dict[str, Any]:
    status, error = edit["status"], edit["error"]
    judged: dict[str, Any] = {}
    if status == "ok":
        assert judgement is not None, sample.id  # every ok edit was judged (or failed) by now
        status, error, judged = judgement["status"], judgement["error"], judgement
    fields = _judged_fields(judged, status, cfg)
    return {
        **result_row(sample=sample, status=status, seed=sample_seed(cfg.run.seed, sample.id), score=fields["score"],
                     edited_image=edit["edited_image"], error=error),
        **fields,
        "digit_mass": judged.get("digit_mass"),  # logits mode; also kept when an off-format answer failed
        "rubric": rubrics.rubric_name(sample.category) if sample.category else None,
        "rubric_sha256": rubrics.sha256(sample.category),
        "human_score": sample.human_score,
        "flags": edit.get("flags") or [],
        "attempts": {"edit": edit.get("attempt"), "judge": judged.get("attempt")},  # see run.json "history"
    }


def _baseline_row(sample: Sample, judgement: Optional[dict], cfg: BenchmarkConfig,
                  rubrics: Rubrics) -> dict[str, Any]:
    """A sanity baseline's result for one sample: the same scoring as the editor's rows."""
    if sample.problem or judgement is None:
        judgement = {"status": "invalid_input", "error": sample.problem or "not judged"}
    fields = _judged_fields(judgement, judgement["status"], cfg)
    return {"id": sample.id, "category": sample.category, "status": judgement["status"], "score": fields["score"],
            "subscores": fields["subscores"], "judge_parse": fields["judge_parse"], "error": judgement.get("error"),
            "rationale": fields["rationale"], "judge_raw": fields["judge_raw"],
            "rubric_sha256": rubrics.sha256(sample.category), "attempts": {"judge": judgement.get("attempt")}}


def _judged_fields(judged: dict[str, Any], status: str, cfg: BenchmarkConfig) -> dict[str, Any]:
    """A judge record as result fields; sub-scores and score only for an ok sample, via the score formula."""
    subscores = judged.get("subscores") if status == "ok" else None
    return {
        "score": combine(subscores, cfg.judge.score_formula, cfg.judge.score_weights) if subscores else None,
        "subscores": subscores,
        "rationale": judged.get("rationale"),
        "judge_parse": judged.get("parse"),  # ok | reasked | failed; null when the sample was not judged
        "judge_raw": judged.get("raw") or [],  # answers that did not parse: kept, never scored
    }


def _write_outputs(cfg: BenchmarkConfig, folder: RunFolder, rows: list[dict], per_rank: list[dict],
                   *, world_size: int, started: dt.datetime, resumed: dict[str, int],
                   baseline_rows: dict[str, list[dict]], samples: list[Sample], rubrics: Rubrics) -> None:
    output_dir = folder.root
    finished = dt.datetime.now(dt.timezone.utc)
    meta = {
        "dataset": cfg.data.dataset,
        "num_samples": len(rows),
        "editor_model": cfg.editor.editor_model if cfg.editor.editor == "diffusers" else f"baseline:{cfg.editor.editor}",
        "judge_model": cfg.judge.judge_model,
        "judge_mode": cfg.judge.judge_mode,
        "score_formula": cfg.judge.score_formula,
        "score_formula_text": FORMULA_TEXT[cfg.judge.score_formula],
        "score_weights": cfg.judge.score_weights if cfg.judge.score_formula == "mean" else None,
        "limit": cfg.data.limit,
        "recipe": cfg.recipe,
        "seed": cfg.run.seed,
        "world_size": world_size,
        **resumed,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
    }
    history = folder.history()
    provenance = collect_provenance(cfg, rubric_hashes=rubrics.hashes(), devices=[r["device"] for r in per_rank],
                                    models=history[-1]["models"])  # as resolved when this attempt started
    provenance.update(started=meta["started"], finished=meta["finished"], fingerprint=folder.fingerprint(),
                      attempts=history)
    report = build_report(rows, timings=timing_summary([r["timings"] for r in per_rank]), meta=meta,
                          baselines=baseline_rows, provenance=provenance)
    # Every output of this pass carries one stamp (see store.read_run): results first, run.json last.
    results_text = jsonl_text(rows)
    baseline_texts = {name: jsonl_text(brows) for name, brows in baseline_rows.items()}
    report["stamp"] = {"attempt": meta["attempt"], "results_sha256": sha256_text(results_text),
                       "baselines_sha256": {name: sha256_text(text) for name, text in baseline_texts.items()}}
    write_text(output_dir / RESULTS_FILE, results_text)
    for name, text in baseline_texts.items():
        write_text(output_dir / BASELINES_DIR / f"{name}.jsonl", text)
    for stale in (output_dir / BASELINES_DIR).glob("*.jsonl"):  # baselines an earlier attempt asked for
        if stale.stem not in baseline_rows:
            stale.unlink()
    write_json(output_dir / REPORT_FILE, report)
    chart = _optional_output(output_dir / CHART_FILE, lambda: write_chart(output_dir / CHART_FILE, report))
    write_text(output_dir / "report.md", render_markdown(report, chart=CHART_FILE if chart else None))
    if cfg.run.gallery:
        _optional_output(output_dir / GALLERY_FILE, lambda: write_gallery(output_dir / GALLERY_FILE, rows, samples,
                                                                           report))
    else:
        (output_dir / GALLERY_FILE).unlink(missing_ok=True)  # an earlier attempt's would look current
    folder.record_outputs(report["stamp"])


def _optional_output(path: Path, write: Callable[[], Any]) -> Any:
    """The chart and the gallery are views of results already written: if one fails for its own reasons (a
    Pillow without FreeType, memory), say so loudly, remove the earlier attempt's file (it would look
    current) and finish the run rather than stop rank 0 before the final barrier. A full or read-only disk
    is no such reason: it stops the run (exit code 1)."""
    try:
        return write()
    except Exception as err:
        if _is_fatal(err):
            raise
        logger.error("could not write %s (results.jsonl and report.json are complete):\n%s", path.name,
                     traceback.format_exc())
    path.unlink(missing_ok=True)
    return None
