"""Stage 1: every rank edits its shard of each job's samples, in lockstep batches with a barrier after each.

A job is one output folder's samples still to edit, with the editor that edits them (a plain run has one
job; a sweep has one per variant, and a loaded editor switches between them in place when it can). Each
sample's edit is saved as a PNG, then its record is appended (fsync'd) before the barrier, so a kill loses at
most the batch in flight. A failure is the sample's (`edit_failed`, `invalid_input`); an error that no later
sample can survive (a full disk, a broken CUDA context) stops the run.
"""

from __future__ import annotations

import errno
import math
import time
import traceback
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from .backends import Editor
from .data import Sample, image_digest
from .distributed import Distributed
from .failures import RepeatedFailure, RunFailed, exception_type
from .progress import Progress
from .store import RunFolder, edit_path, save_png
from .torch_utils import free_memory

FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # the run can't write: stop every rank


@dataclass
class EditJob:
    """The samples one output folder still needs edited, and the editor (backend class and config) for them."""

    folder: RunFolder
    attempt: int
    editor_cls: type
    editor_cfg: Any
    samples: list[Sample]
    label: str = ""  # a sweep variant's name; "" in a plain run
    done_ok: int = 0  # ok edits kept from earlier attempts (they count first for the early stop)


@dataclass
class EditTimings:
    """This rank's time in the edit stage, seconds."""

    load_editor: float = 0.0  # loading editors (the first one, and any reload a job needed)
    swap: float = 0.0  # switching a loaded editor to the next job's settings in place (a sweep's adapters)
    edit: float = 0.0  # the edit loop, barrier waits included (load and swap excluded)
    barrier_wait: float = 0.0  # waiting for the other ranks at the per-batch barriers
    free_editor: float = 0.0  # freeing the editor before the judge loads
    edited: int = 0  # samples this rank edited (invalid_input excluded)
    loads: int = 0  # editors loaded (a sweep over adapters of one base: 1)
    swaps: int = 0  # in-place switches to another job's editor settings
    # peak device memory (bytes) while editing (a job's: since it began; the stage's: the largest); None on CPU
    max_memory_allocated: Optional[int] = None
    max_memory_reserved: Optional[int] = None

    def minus(self, other: EditTimings) -> EditTimings:
        """The time and counts spent since `other` (the peaks are not differences: they stay `self`'s)."""
        return EditTimings(**{f.name: getattr(self, f.name) if f.name in PEAKS
                              else getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def add_peaks(self, peaks: dict[str, Optional[int]]) -> None:
        """Raise the stage's peaks to a job's."""
        for name in PEAKS:
            if peaks[name] is not None:
                setattr(self, name, max(getattr(self, name) or 0, peaks[name]))


PEAKS = ("max_memory_allocated", "max_memory_reserved")


@dataclass
class Outcome:
    """What happened to one sample's edit on its rank."""

    status: str = "ok"
    edited_image: Optional[str] = None
    error: Optional[str] = None
    flags: list[str] = field(default_factory=list)  # suspicious edit output; the sample is still judged
    info: dict[str, Any] = field(default_factory=dict)
    exception: Optional[str] = None  # edit_failed: the type of what the editor raised (for the early stop)
    counted: bool = True  # False: the editor was not asked (it can't take the sample's sources): no early stop


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def is_fatal(err: BaseException) -> bool:
    """Errors after which no later sample can succeed: the run stops instead of failing every sample."""
    if isinstance(err, OSError) and err.errno in FATAL_ERRNOS:
        return True  # the output folder can't be written
    if not isinstance(err, RuntimeError) or "CUDA error" not in str(err):
        return False
    import torch  # a CUDA error other than out-of-memory (illegal address, device-side assert) breaks the context

    return not isinstance(err, torch.OutOfMemoryError)


def warn_every_rank(message: str, *args) -> None:
    """A warning from whichever rank it happens on (accelerate's logger: main process only by default)."""
    from accelerate.logging import get_logger

    get_logger(__name__).warning(message, *args, main_process_only=False)


def load_editor(editor_cls: type, editor_cfg: Any, *, device, trust_remote_code: bool) -> Editor:
    return editor_cls(editor_cfg, device=device, trust_remote_code=trust_remote_code)


def edit_sample(editor: Optional[Editor], sample: Sample, *, seed: int, output_dir: Path) -> Outcome:
    """Decode every image the sample needs, edit it, save the PNG. Never raises for the sample's own problems."""
    if sample.problem:
        return Outcome(status="invalid_input", error=sample.problem)
    several = len(sample.sources) > 1
    if several and editor.max_source_images() < len(sample.sources):
        return Outcome(status="edit_failed", counted=False, error=(
            f"the sample has {len(sample.sources)} source images and editor {type(editor).name!r} takes "
            f"{editor.max_source_images()}: it needs an editor that takes several (Qwen-Image-Edit-2509/2511, "
            "QwenImageEditPlusPipeline); it is not edited from its first image alone"))
    images = []
    for ref in sample.sources:
        try:
            images.append(ref.load())
        except Exception as err:  # unreadable input is the sample's failure, not the run's
            return Outcome(status="invalid_input", error=f"cannot read source image {ref.describe()}: "
                                                         f"{error_text(err)}")
    source = images if several else images[0]  # an editor that takes several gets them all, in the data's order
    if sample.reference_image is not None:  # the judge needs it: find out now, not after a GPU-minute edit
        try:
            sample.reference_image.load()
        except Exception as err:
            return Outcome(status="invalid_input", error=f"cannot read reference image "
                                                         f"{sample.reference_image.describe()}: {error_text(err)}")
    relative = edit_path(sample.id)
    failure = kind = None
    try:
        result = editor.edit(sample, source, seed=seed)
        if not isinstance(result.image, Image.Image):
            raise TypeError(f"the editor returned {type(result.image).__name__}, not a PIL image")
        flags = list(result.flags)
        if all(low == high for low, high in result.image.getextrema()):
            flags.append("constant_image")  # one colour everywhere: the edit almost surely failed
        save_png(result.image, output_dir / relative, root=output_dir)
    except Exception as err:
        if is_fatal(err):
            raise
        warn_every_rank("edit of %r failed:\n%s", sample.id, traceback.format_exc())
        failure, kind = error_text(err), exception_type(err)
    if failure is not None:
        free_memory()  # outside the except block: its traceback no longer pins the failed call's tensors
        return Outcome(status="edit_failed", error=failure, exception=kind)
    info = dict(result.info)
    if several:  # the edit record names every source the edit was made from, in order
        info["source_images"] = [image_digest(image) for image in images]
    return Outcome(edited_image=relative, flags=flags, info=info)


def edit_record(sample_id: str, outcome: Outcome, output_dir: Path, attempt: int, seed: int) -> dict[str, Any]:
    """One sample's edit record; `seed`: the sample's generator seed (its row reads it from here)."""
    record = {"id": sample_id, "status": outcome.status, "edited_image": outcome.edited_image,
              "error": outcome.error, "flags": outcome.flags, **outcome.info, "seed": seed, "attempt": attempt}
    if outcome.status == "ok":
        record["size"] = (output_dir / outcome.edited_image).stat().st_size
    return record


class EditStage:
    """Runs the edit jobs on this rank. `records[i]` are this rank's new edit records of job i."""

    def __init__(self, dist: Distributed, *, seed_of, batch_size: int, trust_remote_code: bool, logger,
                 editor: Optional[Editor] = None):
        """`editor`: one made already (around the caller's pipeline: `Editor.wrap`), used instead of a load."""
        self.dist = dist
        self.seed_of = seed_of  # sample id -> generator seed
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self.logger = logger
        self.timings = EditTimings()
        self.job_timings: list[EditTimings] = []  # each job's share of `timings` (a sweep's variants)
        self.editor: Optional[Editor] = editor

    def run(self, jobs: list[EditJob], *, close: bool = True) -> list[list[dict[str, Any]]]:
        """Edit every job (`close`: free the editor afterwards, for the judge)."""
        shards = [self.dist.shard(job.samples) for job in jobs]
        sizes = [self.dist.shard_sizes(len(shard)) for shard in shards]  # every rank's, on every rank
        total = sum(len(job.samples) for job in jobs)
        progress = Progress("edit", total, enabled=self.dist.is_main)
        records = []
        for job, shard, shard_sizes in zip(jobs, shards, sizes):
            if job.samples:
                self.logger.info("editing %d samples%s on %d process(es), shards %s; batches of up to %d per rank",
                                 len(job.samples), f" of {job.label}" if job.label else "", self.dist.world_size,
                                 shard_sizes, self.batch_size)
            before = replace(self.timings)
            self.dist.reset_peak_memory()
            try:
                records.append(self._run_job(job, shard, shard_sizes, progress))
            except RunFailed:  # every rank stopped at the same barrier
                progress.close()
                self.close()
                raise
            peaks = self.dist.peak_memory()
            self.timings.add_peaks(peaks)
            self.job_timings.append(replace(self.timings.minus(before), **peaks))
        progress.close()
        if close:
            t0 = time.perf_counter()
            self.close()
            self.timings.free_editor = time.perf_counter() - t0
        return records

    def _run_job(self, job: EditJob, shard: list[Sample], shard_sizes: list[int], progress: Progress):
        # Every rank runs the largest shard's number of batches, so all ranks meet at every barrier.
        num_batches = math.ceil(max(shard_sizes) / self.batch_size) if shard_sizes else 0
        writer = job.folder.record_writer(job.attempt, "edit", self.dist.rank)
        records: list[dict[str, Any]] = []
        watch = RepeatedFailure(self.dist, f"edited{f' for variant {job.label}' if job.label else ''}",
                                done_ok=job.done_ok)
        refused: Optional[str] = None  # why this job's loaded editor may not edit ("": it may)
        # each rank's shard starts at this position of job.samples (accelerate splits them in contiguous blocks)
        starts = [sum(shard_sizes[:r]) for r in range(len(shard_sizes))]
        for b in range(num_batches):
            started = time.perf_counter()
            loading = self.timings.load_editor + self.timings.swap  # counted there, not in `edit` as well
            batch_records, attempts = [], []
            for k, sample in enumerate(shard[b * self.batch_size:(b + 1) * self.batch_size]):
                seed = self.seed_of(sample.id)
                if not sample.problem:
                    self._editor_for(job)  # loads or switches only on a rank that has something to edit
                    if refused is None:
                        refused = self._loaded_problem(job)
                if refused and not sample.problem:
                    outcome = Outcome(status="edit_failed", error=refused)
                else:
                    outcome = edit_sample(self.editor, sample, seed=seed, output_dir=job.folder.root)
                batch_records.append(edit_record(sample.id, outcome, job.folder.root, job.attempt, seed))
                if outcome.status != "invalid_input" and outcome.counted:
                    position = starts[self.dist.rank] + b * self.batch_size + k  # its place in job.samples
                    attempts.append(((position,), outcome.exception, sample.id, outcome.error))
            writer.write(batch_records)  # on disk before the barrier: a crash after it loses nothing
            records += batch_records
            waited = time.perf_counter()
            # every rank's outcomes, on every rank; those before the first sample a rank has yet to edit decide
            done = (b + 1) * self.batch_size
            pending = [start + done for start, size in zip(starts, shard_sizes) if size > done]
            stop = watch.barrier(attempts, last=b == num_batches - 1,
                                 settled=(min(pending),) if pending else None)
            self.timings.barrier_wait += time.perf_counter() - waited
            loading = self.timings.load_editor + self.timings.swap - loading  # this batch's loads and swaps
            self.timings.edit += time.perf_counter() - started - loading
            if stop:
                raise RunFailed(stop)
            # every rank is past batch b: all of them have done min(size, (b + 1) * batch_size) samples
            progress.update_to(progress.base + sum(min(n, (b + 1) * self.batch_size) for n in shard_sizes))
        progress.base += sum(shard_sizes)
        self.timings.edited += sum(r["status"] != "invalid_input" for r in records)
        return records

    def _loaded_problem(self, job: EditJob) -> str:
        """"" when the loaded editor is the one the job's folder recorded when the run was planned (an adapter by
        its hash), else why not: then none of the job's samples is edited with it."""
        recorded = (job.folder.fingerprint() or {}).get("editor", {}).get(job.editor_cls.name)
        problem = self.editor.loaded_problem(recorded) if isinstance(recorded, dict) else None
        if problem:
            warn_every_rank("%s%s", f"{job.label}: " if job.label else "", problem)
        return problem or ""

    def _editor_for(self, job: EditJob) -> None:
        """The editor `job` needs: the loaded one, switched in place when it can (a sweep's next adapter),
        else a fresh load."""
        if self.editor is not None and type(self.editor) is job.editor_cls:
            if self.editor.cfg == job.editor_cfg:
                return
            t0 = time.perf_counter()
            if self.editor.switch(job.editor_cfg):
                self.timings.swap += time.perf_counter() - t0
                self.timings.swaps += 1
                return
        self.close()
        t0 = time.perf_counter()
        self.editor = load_editor(job.editor_cls, job.editor_cfg, device=self.dist.device,
                                  trust_remote_code=self.trust_remote_code)
        self.timings.load_editor += time.perf_counter() - t0
        self.timings.loads += 1

    def close(self) -> None:
        """The editor must be gone before the judge takes its memory."""
        if self.editor is not None:
            self.editor.close()
            self.editor = None
        free_memory()
