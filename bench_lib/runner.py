"""The benchmark run: edit every sample, switch models, judge every edit, report.

```
rank r of N: load + validate samples; the main process locks the output folder, reads the records of earlier
             attempts (resume) and shares one plan
  stage 1 (bench_lib.edit_stage):  own shard of the samples without a usable edit, in lockstep batches:
           edit → save PNG → append records; barrier after each batch
  switch:  free the editor completely; load the judge
  stage 2 (bench_lib.judge_stage): batches planned over all ranks' work (the editor's edits and each sanity
           baseline's images), dealt round-robin → append records
  gather small JSON records ─► the main process writes results.jsonl, baselines/, report.json, report.md,
           the chart and gallery.html (bench_lib.outputs)
```
This module never names a backend: it looks the configured ones up in the registries.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .backends import Editor
from .config import BenchmarkConfig, ConfigError, section_fingerprint
from .data import ImageRef, Sample, input_digests, load_benchmark
from .distributed import Distributed
from .edit_stage import EditJob, EditStage
from .failures import RunFailed, nothing_scored
from .judge_stage import EDITOR_JOB, JudgeJob, JudgeStage, KeptJudge, plan_judge_batches
from .judges import Rubrics
from .outputs import build_rows, rank_timings, write_outputs
from .preflight import preflight
from .protocols import Protocol, make_protocol, resolve_protocol, unmapped_categories
from .protocols.base import SampleFacts, one_source_only
from .provenance import backend_models, device_name, harness_commit, package_versions
from .registry import EDITORS, JUDGES
from .results import ON_SOURCE, baseline_edit
from .store import RUN_FILE, FolderLock, RunFolder, load_png, sample_seed
from .sweep import (
    check_variant_folders,
    checkpoint_step,
    discard_sweep_report,
    expand,
    variant_specs,
    write_sweep_report,
)

SCORING_VERSION = 5  # bump when a change to the harness changes scores: old run folders then refuse to resume


def _logger():
    from accelerate.logging import get_logger  # accelerate's: main process only unless a call says otherwise

    return get_logger(__name__)


def check_models(cfg: BenchmarkConfig, variants: Optional[list[BenchmarkConfig]] = None, *,
                 editor: bool = True) -> None:
    """Before the edit stage: both backends' pre-load checks (models exist, the pipeline takes the call's
    arguments, adapters fit), for every variant's editor of a sweep. Downloads only small config files; builds
    tiny models on first use. `editor=False`: the editor is the caller's object in memory (nothing to check)."""
    for variant in (variants or [cfg]) if editor else []:
        try:
            EDITORS.get(variant.editor.editor).check(variant.editor_backend, variant)
        except ConfigError as err:
            if variants is None:
                raise
            raise ConfigError(f"sweep variant {Path(variant.run.output_dir).name!r}: {err}") from None
    JUDGES.get(cfg.judge.judge).check(cfg.judge_backend, cfg)


def download_models(cfg: BenchmarkConfig, variants: Optional[list[BenchmarkConfig]] = None, *,
                    editor: bool = True) -> None:
    """Before the edit stage, on each node's local main process: every model's weights into the node's hub cache
    (offline: a check that they are there), each editor once (a sweep's variants share theirs) and the judge,
    so no rank downloads inside a stage while the others wait for it at a barrier."""
    done: set = set()
    for variant in (variants or [cfg]) if editor else []:
        EDITORS.get(variant.editor.editor).download(variant.editor_backend, variant, done=done)
    JUDGES.get(cfg.judge.judge).download(cfg.judge_backend, cfg, done=done)


def download_models_on_each_node(dist: Distributed, cfg: BenchmarkConfig, variants: list[BenchmarkConfig], *,
                                 editor: bool = True) -> None:
    """`download_models` on each node's local main process while the node's other processes wait (they read the
    same cache). The wait is under the process-group timeout: `process_group_timeout` must cover the first
    download of an uncached model (or fetch it beforehand: `hf download ORG/NAME`)."""
    dist.on_local_main(lambda: download_models(cfg, variants, editor=editor))


def run_fingerprint(cfg: BenchmarkConfig, dataset_identity: str, rubrics: Rubrics,
                    protocol: Protocol) -> dict[str, Any]:
    """Everything a result depends on, from the fields each section declares result-changing (bench_lib.config,
    bench_lib.backends): the data by content, both backends' settings (an adapter by its hash), the rubrics'
    hashes and the harness's scoring version. Not in it: whatever is declared not to change results (limit,
    batch sizes, output folder, timeout) or is applied afresh when results are written (the score formula)."""
    editor, judge = EDITORS.get(cfg.editor.editor), JUDGES.get(cfg.judge.judge)
    return {"data": {**section_fingerprint(cfg.data), "dataset_content": dataset_identity},
            "editor": {**section_fingerprint(cfg.editor), editor.name: editor.fingerprint(cfg.editor_backend, cfg)},
            "judge": {**section_fingerprint(cfg.judge), judge.name: judge.fingerprint(cfg.judge_backend, cfg)},
            "run": section_fingerprint(cfg.run), "rubrics": rubrics.hashes(),
            "protocol": {"name": protocol.name, "prompts_sha256": protocol.digest()}, "scoring": SCORING_VERSION}


@dataclass
class Plan:
    """One output folder's attempt, as the main process found it: shared with every rank."""

    attempt: int
    edits: dict[str, dict]  # sample id -> latest edit record of an earlier attempt
    judgements: dict[str, dict]
    reusable: set[str]  # ids whose ok edit (PNG on disk) is kept
    baseline_records: dict[str, dict[str, dict]] = field(default_factory=dict)


@dataclass
class Unit:
    """One output folder of a run: the run itself, or one variant of a sweep (bench_lib.sweep). A plain run is
    a sweep of one unit: the same code runs both."""

    cfg: BenchmarkConfig
    folder: RunFolder
    label: str = ""  # the sweep variant's name; "" in a plain run
    plan: Optional[Plan] = None


def run(cfg: BenchmarkConfig, *, loaded: Optional[tuple[list[Sample], str]] = None, accelerator: Any = None,
        pipeline: Any = None, kept_judge: Optional[KeptJudge] = None, step: Optional[int] = None) -> Path:
    """Run (or resume) the benchmark on every rank; rank 0 writes the outputs. Returns the output folder.

    A plain run is one unit in `output_dir`. With `sweep` set, each variant (bench_lib.sweep.expand) is a unit, a
    run of its own in `output_dir/<variant>/`: the editor is loaded once per pipeline and switched between
    adapters in place, the judge is loaded once and judges every variant's edits in one stage, and then the sweep
    report is written (bench_lib.sweep). Every rank runs this. With `log_with` (or an `accelerator` that has
    trackers), each unit's report is then logged to the trackers (bench_lib.tracking) at `step` (a sweep
    variant: the step its name carries, else 0).

    `loaded`: what `bench_lib.preflight.preflight(cfg)` returned, when the caller ran it already (the command
    line does, before torch is imported); otherwise it runs here. `accelerator`: the caller's, already made (no
    second process group; left running). `pipeline`: the caller's editor object in memory, used through the
    configured editor backend's `wrap` instead of a load, and handed back unchanged. `kept_judge`: keep the judge
    loaded there after the run (and use it if it holds this run's judge). The Python API (bench_lib.api) passes
    these."""
    if pipeline is not None and cfg.sweep.sweep:
        raise ConfigError("`sweep` loads the editor of each variant itself: pass no `pipeline` with a sweep.")
    if loaded is None:
        loaded = preflight(cfg, editor=pipeline is None)
    top = Path(cfg.run.output_dir)
    logging_dir = cfg.tracking.logging_folder(cfg.run.output_dir)
    dist = Distributed(timeout_s=cfg.run.process_group_timeout, accelerator=accelerator,  # first: its timeout wins
                       log_with=cfg.tracking.names() if accelerator is None else None, logging_dir=logging_dir)
    # The main process lists a folder sweep's checkpoints, once, for every rank: a training job that saves one
    # while the processes start must not give two ranks two lists (their units would pair other variants' edits).
    variants = expand(cfg, specs=dist.on_main(lambda: variant_specs(cfg))) if cfg.sweep.sweep else None
    given = EDITORS.get(cfg.editor.editor).wrap(cfg.editor_backend, pipeline, device=dist.device) \
        if pipeline is not None else None
    if variants is None:
        units, sweep_lock = [Unit(cfg, RunFolder(top))], None
    else:
        units, sweep_lock = [Unit(v.cfg, RunFolder(top / v.name), label=v.name) for v in variants], FolderLock(top)

    def lock_sweep() -> None:
        sweep_lock.acquire()
        check_variant_folders(top, variants)

    def discard_report() -> None:
        if cfg.run.overwrite:  # (run_units turns it off on a SLURM restart)
            discard_sweep_report(top)

    try:
        if sweep_lock is not None:
            dist.on_main(lock_sweep)
        done = run_units(cfg, dist, units, loaded, on_start=discard_report if variants is not None else None,
                         editor=given, kept_judge=kept_judge)
        if variants is not None:
            if dist.is_main:
                write_sweep_report(top, variants, done["per_unit"])
            dist.barrier()
        if dist.is_main:
            log_to_trackers(cfg, dist, units, done["samples"], step=step, logging_dir=logging_dir)
        if done["budget_reached"]:  # after every report is written: exit 1, a rerun continues
            raise RunFailed(done["budget_reached"])
        if done["unscored"]:  # after every report is written: the run fails if any unit scored nothing
            raise nothing_scored(done["unscored"])
    except RunFailed as err:  # every rank raised it at the same barrier
        fail_together(dist, err)
        raise
    finally:
        if given is not None:
            given.close()  # the caller's pipeline back as it was, whatever happened (idempotent)
        for unit in units:
            unit.folder.lock.release()  # main process: held since the start
        if sweep_lock is not None:
            sweep_lock.release()
    dist.close()
    return top


def log_to_trackers(cfg: BenchmarkConfig, dist: Distributed, units: list[Unit], samples: list[Sample], *,
                    step: Optional[int], logging_dir: str) -> None:
    """Main process: each unit's report into the trackers (bench_lib.tracking), at `step` (a plain run: the
    caller's, else 0; a sweep variant: the step its name carries, else 0). The trackers are the caller's
    accelerator's when it has any; else this run's own, started here. A tracker that fails is a warning: the
    reports are written already."""
    from .tracking import log_folder, tracker_config

    logger = _logger()
    if not dist.owned and cfg.tracking.names() and not dist.accelerator.trackers:
        logger.warning("`log_with` is ignored: the Accelerator passed in has no trackers (make it with log_with=... "
                       "and call init_trackers, and the evaluations are logged into its runs)")
    if dist.owned and cfg.tracking.names():
        try:
            Path(logging_dir).mkdir(parents=True, exist_ok=True)
            dist.start_trackers(cfg.tracking.tracker_project, tracker_config(cfg))
        except Exception as err:  # the trackers are an extra: the run's own reports are written
            logger.warning("trackers %s: could not start (%s: %s)", ", ".join(cfg.tracking.names()),
                           type(err).__name__, " ".join(str(err).split())[:300])
            dist.drop_trackers()
            return
    if not dist.accelerator.trackers:
        return
    def at(unit: Unit) -> int:
        return (step or 0) if not unit.label else (checkpoint_step(unit.label) or 0)

    # in step order: a tracker drops a log at a step below one it has logged (W&B), and a sweep lists the variants
    # whose names carry no step after the checkpoints
    for unit in sorted(units, key=at):
        try:
            log_folder(dist.accelerator, unit.folder.root, step=at(unit), samples=samples)
        except Exception as err:  # reading the reports back: the trackers' own failures are warned per tracker
            logger.warning("logging %s to the trackers failed (%s: %s)", unit.folder.root, type(err).__name__,
                           " ".join(str(err).split())[:300])


def fail_together(dist: Distributed, err: RunFailed) -> None:
    """Every rank raised `err` at the same point: the main process reports it in one line while every rank still
    waits at a barrier (a launcher stops the others as soon as one process exits with an error), then the process
    group closes as after a finished run. The command line then exits with code 1 without a second line."""
    if dist.is_main:
        _logger().error("%s", err)
    err.reported = True
    dist.barrier()
    dist.close()


def _lock(folder: RunFolder) -> None:
    folder.lock.acquire()  # makes the folder; removes it again at release if the run wrote nothing


def run_units(cfg: BenchmarkConfig, dist: Distributed, units: list[Unit], loaded,
              on_start: Optional[Callable[[], None]] = None, *, editor: Optional[Editor] = None,
              kept_judge: Optional[KeptJudge] = None) -> dict[str, Any]:
    """Edit, judge and report every unit (one for a plain run; a sweep's variants, which differ only in their
    editor settings). The editor is loaded once and switched between units in place where it can be; the judge
    is loaded once and judges every unit's edits in one stage; the sanity baselines (the same images for every
    unit) are judged once, in the first unit's folder, and their records copied to the others. The main process
    holds each unit's folder lock from the start (the caller releases them). `on_start`: called on the main
    process once every unit's folder has been checked, before the first is changed."""
    logger = _logger()
    for unit in units:
        dist.on_main(lambda u=unit: _lock(u.folder))  # before anything is loaded, and before any rank writes
    if cfg.run.overwrite and _slurm_restarts() > 0:
        # A requeued SLURM job reruns the same command: `overwrite` would wipe what its first start did.
        logger.warning("SLURM restart %d of this job: resuming the run; `overwrite` is ignored", _slurm_restarts())
        for unit in units:
            unit.cfg.run.overwrite = False
        cfg.run.overwrite = False
    if cfg.ignored:
        logger.warning("ignored: %s (options of backends this run does not use: editor %r, judge %r)",
                       ", ".join(cfg.ignored), cfg.editor.editor, cfg.judge.judge)
    started = dt.datetime.now(dt.timezone.utc)
    quiet_libraries(verbose=cfg.run.verbose)

    # A local dataset was read by the preflight on every process; a hub one is downloaded by one process first.
    loaded = loaded or dist.main_first(lambda: load_benchmark(cfg.data))
    samples, dataset_identity = loaded
    for config in (cfg, *(u.cfg for u in units)):  # `protocol: auto`: the data's format's protocol, from now on
        resolve_protocol(config.judge, getattr(loaded, "format", ""))
    dist.main_first(lambda: check_models(cfg, [u.cfg for u in units], editor=editor is None), local=True)
    download_models_on_each_node(dist, cfg, [u.cfg for u in units], editor=editor is None)
    rubrics = Rubrics(cfg.judge.prompts_dir)
    protocol = make_protocol(cfg.judge, rubrics)
    check_same_inputs(dist, {"dataset": dataset_identity, "samples": len(samples), "rubrics": rubrics.hashes(),
                             "judge prompts": protocol.digest()})
    samples = one_source_only(samples, protocol)  # several sources under a protocol that shows one: invalid_input
    _log_input_problems(samples, protocol, cfg.judge.category_map, logger)
    facts = {s.id: protocol.facts(s, cfg.judge.category_map) for s in samples}  # each sample's view and questions
    # The main process reads the folders and shares one plan per unit, so every rank (every node, whatever its
    # filesystem cache shows) works from the same records.
    def plan_units() -> list[Plan]:
        prints = [run_fingerprint(u.cfg, dataset_identity, rubrics, protocol) for u in units]
        if editor is not None:  # the caller's object: recorded as such (never resumed by another call)
            prints[0]["editor"]["in_memory"] = editor.in_memory()
        models = [backend_models(u.cfg) for u in units]  # where the weights come from, as this attempt finds them
        for unit, fingerprint, found in zip(units, prints, models):  # all before any is changed: a refusal leaves
            unit.folder.check(fingerprint, overwrite=unit.cfg.run.overwrite)  # them as they were
            if not unit.cfg.run.overwrite:
                check_same_weights(unit.folder, found, editor=editor is None)
        if on_start is not None:
            on_start()
        inputs = input_digests(samples)
        return [_plan(u.cfg, u.folder, fp, samples, dist.world_size, logger, models=found, inputs=inputs,
                      in_memory=editor.in_memory() if editor is not None else None)
                for u, fp, found in zip(units, prints, models)]

    plans = dist.on_main(plan_units)
    for unit, plan in zip(units, plans):
        unit.plan = plan
        _check_shared_folder(dist, unit.folder, plan.attempt)

    # Stage 1: edit what has no usable edit yet (a resumed run skips the rest), unit after unit.
    editor_cls = EDITORS.get(cfg.editor.editor)
    to_edit = [[s for s in samples if s.id not in u.plan.reusable] for u in units]
    edit_stage = EditStage(dist, seed_of=seed_of(cfg), batch_size=cfg.editor.edit_batch_size,
                           trust_remote_code=cfg.run.trust_remote_code, logger=logger, editor=editor)
    new_edits = edit_stage.run([EditJob(u.folder, u.plan.attempt, editor_cls, u.cfg.editor_backend, todo, label=u.label,
                                        done_ok=len(u.plan.reusable)) for u, todo in zip(units, to_edit)])
    for unit, records in zip(units, new_edits):
        for record in dist.all_gather(records):
            unit.plan.edits[record["id"]] = record
            unit.plan.judgements.pop(record["id"], None)  # a new image needs a new judgement

    # Stage 2: judge every ok edit without an ok judgement, every unit's, and the sanity baselines' images once.
    jobs = [editor_job(u, samples, on_source=cfg.judge.failure_policy == "reference"
                       and protocol.missing_edit_on_source) for u in units]
    shared = shared_baseline_records(units, samples)
    jobs += baseline_jobs(cfg, units[0], shared, samples)
    batches = dist.on_main(lambda: plan_judge_batches(jobs, protocol, facts,
                                                      batch_size=cfg.judge.judge_batch_size,
                                                      max_pixels=protocol.max_pixels(cfg.judge)))
    judge_stage = JudgeStage(dist, cfg, protocol, facts, logger=logger, kept=kept_judge)
    judged_ok = sum(r.get("status") == "ok" for records in shared.values() for r in records.values()) + sum(
        u.plan.edits[s.id]["status"] == "ok" and u.plan.judgements.get(s.id, {}).get("status") == "ok"
        for u in units for s in samples)
    new_judgements = judge_stage.run(jobs, batches, done_ok=judged_ok)
    gathered = [dist.gather(records) for records in new_judgements]  # the same order on every rank
    if judge_stage.budget_reached and dist.is_main:  # the report says which samples the budget left unjudged
        gathered = [records + not_judged(job, {r["id"] for r in records}, judge_stage.budget_reached)
                    for job, records in zip(jobs, gathered)]
    per_unit = [dist.gather([{"timings": rank_timings(job_timings, judge_stage.timings,
                                                      edit_stage.timings.free_editor),
                              "device": device_name(dist.device)}]) for job_timings in edit_stage.job_timings]
    unscored = []  # (variant, why) of each folder where no editor sample was scored
    if dist.is_main:
        for unit, records in zip(units, gathered):
            unit.plan.judgements.update({r["id"]: r for r in records})
        fresh = {job.kind: {r["id"]: r for r in records} for job, records in zip(jobs[len(units):],
                                                                                 gathered[len(units):])}
        share_baseline_records(units, shared, fresh)
        for unit, todo, job, per_rank in zip(units, to_edit, jobs, per_unit):
            statuses, filled, hollow = _write_unit(unit, samples, protocol, facts, rubrics, per_rank, started,
                                                   dist.world_size, edited_now=len(todo),
                                                   judged_now=len(job.samples) - len(job.on_source), logger=logger)
            if not statuses["ok"]:
                unscored.append((unit.label, f"none of the {sum(statuses.values())} samples is ok "
                                             f"({', '.join(f'{n} {k}' for k, n in sorted(statuses.items()))}); the "
                                             f"reports are written in {unit.folder.root} (see each row's error)"))
            elif filled == statuses["ok"]:  # every "ok" is failure_policy reference's fill-in: the judge said nothing
                unscored.append((unit.label, f"no answer of the judge parsed for any of the {sum(statuses.values())} "
                                             f"samples: the {filled} ok row(s) hold only the values failure_policy "
                                             "reference fills in for unparsed answers; the reports are written in "
                                             f"{unit.folder.root} (see each row's judge_raw)"))
            elif hollow == statuses["ok"]:  # every "ok" is a source scored in place of a failed edit (or a fill-in)
                unscored.append((unit.label, f"no edit was scored in any of the {sum(statuses.values())} samples: the "
                                             f"{statuses['ok']} ok row(s) are source images that failure_policy "
                                             "reference scores in place of edits that failed (as the benchmark "
                                             "does), or values it fills in for unparsed answers; the reports are "
                                             f"written in {unit.folder.root} (see each row's error)"))
    unscored = dist.all_gather([unscored] if dist.is_main else [])[0]  # also the barrier after the reports
    # main process: each unit's per-rank timings; every rank: the folders that scored nothing (exit code 1)
    return {"per_unit": per_unit, "unscored": unscored, "budget_reached": judge_stage.budget_reached,
            "samples": samples, "judge_loads": judge_stage.timings.loads}


def check_same_inputs(dist: Distributed, found: dict[str, Any]) -> None:
    """Every process read the local dataset, the rubrics and the judge's prompt file itself, and the fingerprint
    (and every row's rubric hash) is the main process's reading: files rewritten while the processes started (a
    preparation job still writing them, a rubric being edited) would have some ranks edit or judge other samples
    or with other prompts than the run records. ConfigError on every rank, naming what differs."""
    seen = dist.all_gather([found])
    differ = [name for name in found if any(other[name] != seen[0][name] for other in seen)]
    if differ:
        raise ConfigError(f"the {' and the '.join(differ)} changed while the processes read them (the ranks read "
                          "different files): rerun once they are written.")


def not_judged(job: JudgeJob, judged: set[str], why: str) -> list[dict[str, Any]]:
    """Rows-only judge records (never written to the records, so a rerun judges them) of the job's samples that the
    judge's request budget left unjudged."""
    return [{"id": s.id, "status": "judge_failed", "error": f"not judged: {why}", "answers": None,
             "distributions": None, "rationale": None, "parse": None, "raw": [], "digit_mass": None, "tokens": None,
             "attempt": job.attempt} for s in job.samples if s.id not in judged]


def _write_unit(unit: Unit, samples: list[Sample], protocol: Protocol, facts: dict[str, SampleFacts],
                rubrics: Rubrics, per_rank: list[dict], started: dt.datetime, world_size: int, *, edited_now: int,
                judged_now: int, logger) -> tuple[Counter, int, int]:
    cfg, plan = unit.cfg, unit.plan
    edits, judgements = plan.edits, plan.judgements
    rows, baseline_rows = build_rows(samples, edits, judgements, plan.baseline_records, protocol, facts,
                                     failure_policy=cfg.judge.failure_policy)
    local = Path(cfg.data.dataset).expanduser()
    meta = {"dataset": cfg.data.dataset, "dataset_path": str(local.resolve()) if local.exists() else None,
            "editor": cfg.editor.editor,
            "editor_model": EDITORS.get(cfg.editor.editor).display_name(cfg.editor_backend), "judge": cfg.judge.judge,
            "judge_model": JUDGES.get(cfg.judge.judge).display_name(cfg.judge_backend),
            "judge_mode": cfg.judge.judge_mode, "limit": cfg.data.limit, "recipe": cfg.recipe,
            "seed": cfg.run.seed, "world_size": world_size, "attempt": plan.attempt,
            "reused_edits": len(samples) - edited_now,
            "reused_judgements": sum(edits[s.id]["status"] == "ok" for s in samples) - judged_now,
            "started": started.isoformat(timespec="seconds")}
    write_outputs(cfg, unit.folder, rows=rows, baseline_rows=baseline_rows, per_rank=per_rank, samples=samples,
                  rubrics=rubrics, protocol=protocol, meta=meta, edit_records=[edits[s.id] for s in samples],
                  judge_records={s.id: judgements[s.id] for s in samples if s.id in judgements})
    statuses = Counter(row["status"] for row in rows)
    log = logger.info if statuses["ok"] == len(rows) else logger.warning
    log("%sstatuses: %s; wrote %s", f"{unit.label}: " if unit.label else "", dict(statuses),
        unit.folder.root / "report.md")
    # ok only by the failure policy: no answer of the judgement parsed, and the benchmark's rules filled them all in
    filled = {row["id"] for row in rows if row["status"] == "ok" and row.get("judge_parse") == "failed"
              and not (judgements.get(row["id"]) or {}).get("partial_answers")}
    # ok only by the failure policy: a source image scored in place of an edit that failed (RE-Edit's rule)
    on_source = {row["id"] for row in rows if row["status"] == "ok" and ON_SOURCE in (row.get("flags") or [])}
    return statuses, len(filled), len(filled | on_source)


def editor_job(unit: Unit, samples: list[Sample], *, on_source: bool = False) -> JudgeJob:
    """The unit's ok edits without an ok judgement; with `on_source` (failure_policy reference, a benchmark that
    scores a missing edit on the source image: RE-Edit) also its failed edits, judged on their source image."""
    edits, root = unit.plan.edits, unit.folder.root

    def pending(s: Sample) -> bool:
        judged = unit.plan.judgements.get(s.id, {})
        if edits[s.id]["status"] == "edit_failed" and on_source:
            return not (judged.get("status") == "ok" and judged.get("on_source"))
        return edits[s.id]["status"] == "ok" and judged.get("status") != "ok"

    def failed(s: Sample) -> bool:
        return edits[s.id]["status"] != "ok"

    todo = [s for s in samples if pending(s)]
    return JudgeJob(EDITOR_JOB, unit.folder, unit.plan.attempt, todo,
                    lambda s: s.source_image.load() if failed(s) else load_png(root / edits[s.id]["edited_image"]),
                    lambda s: s.source_image.size() if failed(s) else
                    ImageRef(path=root / edits[s.id]["edited_image"]).size(), label=unit.label,
                    on_source={s.id for s in todo if failed(s)})


def shared_baseline_records(units: list[Unit], samples: list[Sample]) -> dict[str, dict[str, dict]]:
    """Each baseline's records of the run's samples over all units (the first unit's win): the baseline's images and
    the judge are the same for every unit, so a judgement made for one is every unit's. Only the samples loaded now:
    a folder that gets a copy records the image files' digests of these alone (one left out by `limit` would keep
    a copied judgement of an image replaced since)."""
    ids = {s.id for s in samples}
    shared: dict[str, dict[str, dict]] = {}
    for unit in reversed(units):
        for name, records in unit.plan.baseline_records.items():
            shared.setdefault(name, {}).update((i, r) for i, r in records.items() if i in ids)
    return shared


def share_baseline_records(units: list[Unit], shared: dict[str, dict[str, dict]],
                           fresh: dict[str, dict[str, dict]]) -> None:
    """Main process: every unit gets the baseline records (`shared`: earlier ones, `fresh`: judged now, in the
    first unit's folder); those a folder lacks are appended to its records as its own attempt's, so each folder
    resumes and reports as a run of its own."""
    def same(a: Optional[dict], b: dict) -> bool:
        return a is not None and {**a, "attempt": None} == {**b, "attempt": None}

    for name in shared:
        shared[name].update(fresh.get(name, {}))
    for i, unit in enumerate(units):
        for name, records in shared.items():
            own = unit.plan.baseline_records.setdefault(name, {})
            written = fresh.get(name, {}) if i == 0 else {}  # the judge stage wrote these into the first folder
            missing = [{**r, "attempt": unit.plan.attempt} for key, r in records.items()
                       if key not in written and not same(own.get(key), r)]
            unit.folder.record_writer(unit.plan.attempt, f"baseline-{name}", 0).write(missing)
            own.update(records)
            own.update({r["id"]: r for r in missing})


def baseline_jobs(cfg: BenchmarkConfig, unit: Unit, records: dict[str, dict[str, dict]],
                  samples: list[Sample]) -> list[JudgeJob]:
    """One judge job per sanity baseline: its images are computed from the source when judged (no model)."""
    jobs = []
    for name in cfg.editor.baseline_names():
        editor = EDITORS.get(name)(EDITORS.get(name).Config(), device=None)
        done = records.setdefault(name, {})
        todo = [s for s in samples if baseline_edit(s)["status"] == "ok" and done.get(s.id, {}).get("status") != "ok"]
        jobs.append(JudgeJob(name, unit.folder, unit.plan.attempt, todo,
                             lambda s, e=editor: e.edit(s, s.source_image.load(), seed=0).image,
                             lambda s: s.source_image.size()))  # both baselines keep the source's size
    return jobs


def quiet_libraries(*, verbose: bool) -> None:
    """The model libraries' own progress bars (one per pipeline call, per shard loaded) and their info logs
    would interleave with the harness's samples-done bars: off on every rank unless `verbose`."""
    if verbose:
        return
    import datasets
    import diffusers
    import transformers

    for library in (diffusers, transformers, datasets):
        library.utils.logging.disable_progress_bar()
        library.utils.logging.set_verbosity_warning()


def seed_of(cfg: BenchmarkConfig) -> Callable[[str], int]:
    """Sample id -> its generator seed: the one place a run derives it (from `seed` and the id only). The edit
    stage edits with it and records it; rows read it from the edit record."""
    return lambda sample_id: sample_seed(cfg.run.seed, sample_id)


def _slurm_restarts() -> int:
    value = os.environ.get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


MODEL_IDENTITY = ("config_sha256", "weights_sha256", "resolved_revision")  # what tells two weights of one name apart


def check_same_weights(folder: RunFolder, models: dict[str, Any], *, editor: bool = True) -> None:
    """Main process, before a resume changes anything: the editor's and the judge's weights must be those of the
    folder's earlier attempts. A local model folder is named in the fingerprint by its path, so weights saved again
    in place (a training job's output, a re-converted judge) would otherwise edit and judge the rest of the run
    while the kept edits and judgements came from the old ones. Each of a local folder's config and sampled weights
    hashes, and a hub model's resolved commit, is compared with the latest earlier attempt that recorded it.
    `editor=False`: the caller's pipeline in memory (such a folder is never resumed)."""
    history = [h["models"] for h in folder.history() if isinstance(h, dict) and isinstance(h.get("models"), dict)]
    changed = []
    for role in ("editor", "judge") if editor else ("judge",):
        new = models.get(role) or {}
        for key in MODEL_IDENTITY:
            # the latest attempt that recorded it: one that could not (a hub model outside that machine's cache)
            # must not hide a change from the attempts before it
            old = next((m[role][key] for m in reversed(history) if isinstance(m.get(role), dict)
                        and m[role].get("id") == new.get("id") and isinstance(m[role].get(key), str)), None)
            if old is not None and isinstance(new.get(key), str) and old != new[key]:
                changed.append(f"{role} {new.get('id')!r} {key} {old[:12]}… -> {new[key][:12]}…")
                break
    if changed:
        raise ConfigError(f"{folder.root}: the model weights changed since the previous attempt "
                          f"({'; '.join(changed)}): its kept edits and judgements were made with the old ones. "
                          "Resume with the same weights, use another output_dir, or --overwrite to start over.")


def _plan(cfg: BenchmarkConfig, folder: RunFolder, fingerprint: dict, samples: list[Sample], world_size: int,
          logger, *, models: Optional[dict] = None, inputs: Optional[dict[str, str]] = None,
          in_memory: Optional[dict] = None) -> Plan:
    """Start the next attempt; return it with the earlier records, the ids whose edits can be reused, and
    the earlier judgements of each sanity baseline. `inputs`: each sample's image files' digest
    (`data.input_digests`): a sample whose files changed since they were recorded is edited and judged again."""
    versions = package_versions()
    changed = folder.versions_changed(versions) if not cfg.run.overwrite else {}
    if changed:
        logger.warning("library versions differ from the previous attempt's, so redone edits may differ "
                       "slightly from kept ones: %s", changed)
    info = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "world_size": world_size,
            "harness": harness_commit(), "models": models if models is not None else backend_models(cfg)}
    if in_memory is not None:  # the caller's pipeline: `editor_model` names no weights of its own
        info["models"]["editor"] = {"backend": cfg.editor.editor, "id": cfg.editor_backend.editor_model,
                                    "source": "in memory", "in_memory": in_memory}
    inputs = inputs or {}
    recorded = {} if cfg.run.overwrite else folder.recorded_inputs()
    replaced = {i for i, digest in inputs.items() if recorded.get(i, digest) != digest}
    # a replaced sample's new digest is recorded once the records that supersede its old ones are on disk: an
    # attempt stopped before that finds it replaced again
    attempt = folder.prepare(fingerprint, overwrite=cfg.run.overwrite, versions=versions, info=info,
                             inputs={i: digest for i, digest in inputs.items() if i not in replaced})
    edits, judgements = folder.read_records()  # earlier attempts only: this one has written nothing yet
    for record in edits.values():  # an edit recorded before edit records carried their seed
        record.setdefault("seed", seed_of(cfg)(record["id"]))
    stale = EDITORS.get(cfg.editor.editor).stale_edits(cfg.editor_backend, samples, edits)
    stale.update({i: "its source or reference image file changed since it was edited and judged"
                  for i in sorted(replaced) if edits.get(i, {}).get("status") == "ok" and i not in stale})
    if stale:
        first = next(iter(stale))
        logger.warning("%d kept edit(s) are done again: %r: %s", len(stale), first, stale[first])
    # a sample invalid now (its files gone, or several sources under a protocol that shows one) is recorded so again
    reusable = {s.id for s in samples
                if s.id not in stale and not s.problem and folder.edit_is_reusable(edits.get(s.id))}
    baselines = {name: folder.read_baseline_records(name) for name in cfg.editor.baseline_names()}
    for sample_id in replaced:  # the baselines' images are made from the source, and the judge sees both
        judgements.pop(sample_id, None)
        for records in baselines.values():
            records.pop(sample_id, None)
    forget_replaced(folder, attempt, replaced, edits, baselines, seed_of(cfg))
    if replaced:
        folder.record_inputs({i: inputs[i] for i in replaced})
    return Plan(attempt, edits, judgements, reusable, baselines)


REPLACED = "its source or reference image file changed since it was edited and judged: to be done again"


def forget_replaced(folder: RunFolder, attempt: int, replaced: set[str], edits: dict[str, dict],
                    baselines: dict[str, dict[str, dict]], seed: Callable[[str], int]) -> None:
    """Main process: records that supersede, on disk, the kept edits and baseline judgements of samples whose image
    files changed. Once they are written, this attempt records the new files' digests (`_plan`), so an attempt
    stopped before it redid the samples (a kill, an early stop, the judge's budget) leaves the next one nothing to
    compare: without these records it would keep the old image's edit and judgements. The same holds for a
    baseline this attempt does not run (baselines may change between attempts): every baseline the folder holds
    judgements of is superseded. The edit stage and the judge stage write the new records after these."""
    ids = sorted(i for i in replaced if edits.get(i, {}).get("status") == "ok")
    folder.record_writer(attempt, "edit", 0).write(
        [{"id": i, "status": "edit_failed", "edited_image": None, "error": REPLACED, "flags": [], "seed": seed(i),
          "attempt": attempt} for i in ids])
    for name in sorted(set(baselines) | folder.recorded_baselines()):
        folder.record_writer(attempt, f"baseline-{name}", 0).write(
            [{"id": i, "status": "judge_failed", "error": REPLACED, "answers": None, "distributions": None,
              "rationale": None, "parse": None, "raw": [], "digit_mass": None, "tokens": None, "attempt": attempt}
             for i in sorted(replaced)])


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


def _log_input_problems(samples: list[Sample], protocol: Protocol, category_map: dict[str, str], logger) -> None:
    unmapped = unmapped_categories({s.category for s in samples}, protocol, category_map)
    if unmapped:
        logger.warning("categories that map to none of protocol %r's dimensions use its default (%s): %s; map them "
                       "with --category_map CATEGORY=DIMENSION (dimensions: %s)", protocol.name,
                       protocol.default_dimension, unmapped, sorted(protocol.known_dimensions()))
    invalid = [s for s in samples if s.problem]
    if invalid:
        logger.warning("%d of %d samples are invalid_input and will not be edited, e.g. %r: %s",
                       len(invalid), len(samples), invalid[0].id, invalid[0].problem)
