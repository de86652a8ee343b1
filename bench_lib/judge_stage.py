"""Stage 2: the judge rates every edit that has no ok judgement yet (and the sanity baselines' images).

The main process plans the batches over all ranks' work: each job's samples (the editor's edits, each
baseline's images) are sorted by an estimate of their prompt length and cut into batches of
`judge_batch_size` neighbours, so a batch holds the same samples whatever the number of processes (and so do
its scores, which batch composition moves in the last bits). The batches of all jobs are dealt to the ranks in
turn, so no rank idles while another judges a whole job; the ranks meet at a barrier after every round. A batch
that fails is judged again one sample at a time, so only the culprit fails.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from .data import Sample, image_digest
from .distributed import Distributed
from .edit_stage import error_text, is_fatal, warn_every_rank
from .failures import RepeatedFailure, RunFailed, exception_type
from .judges import Judgement, JudgeRequest
from .judges.policy import judge as judge_samples
from .judging import JudgeBudgetReached, JudgeUnavailable, TextPart
from .progress import Progress
from .protocols import Protocol
from .protocols.base import SampleFacts, fit_pixels  # noqa: F401  (fit_pixels: scripts use it)
from .store import RunFolder
from .torch_utils import free_memory

EDITOR_JOB = "editor"
NOT_JUDGED = "not_judged"  # an outcome the budget left unjudged: no record is written (a rerun judges it)


@dataclass
class JudgeJob:
    """Images of one kind to judge for one output folder: the editor's edits, or a sanity baseline's
    (computed from the source when judged)."""

    kind: str  # EDITOR_JOB or a baseline's name
    folder: RunFolder
    attempt: int
    samples: list[Sample]
    load_edited: Callable[[Sample], Image.Image]
    edited_size: Callable[[Sample], tuple[int, int]]
    label: str = ""  # a sweep variant's name; "" in a plain run
    on_source: set[str] = field(default_factory=set)  # ids whose edit failed, judged on their source image instead

    @property
    def name(self) -> str:
        """For the progress bar: "editor", a baseline's name, with the sweep variant's in front."""
        kind = "editor" if self.kind == EDITOR_JOB else self.kind
        return f"{self.label}/{kind}" if self.label else kind

    @property
    def record_kind(self) -> str:
        return "judge" if self.kind == EDITOR_JOB else f"baseline-{self.kind}"


@dataclass
class JudgeTimings:
    """This rank's time in the judge stage, seconds."""

    load_judge: float = 0.0
    judge: float = 0.0  # judging, round barriers included
    judged: int = 0  # samples this rank judged
    loads: int = 0  # judges loaded (one per run, a sweep's included; 0 on a rank with nothing to judge)
    # peak device memory (bytes) in the stage, the judge's load included; None on CPU
    max_memory_allocated: Optional[int] = None
    max_memory_reserved: Optional[int] = None
    usage: dict = field(default_factory=dict)  # a judge server's: requests, retries, failures, tokens


@dataclass
class JudgeOutcome:
    status: str = "ok"
    error: Optional[str] = None
    judgement: Optional[Judgement] = None
    exception: Optional[str] = None  # judge_failed because the judge raised: the exception's type (early stop)
    inputs: Optional[list[dict[str, Any]]] = None  # what the judge was sent, per view (see `judge_inputs`)


def sample_requests(sample: Sample, edited: Image.Image, max_pixels: Optional[int], protocol: Protocol,
                    facts: SampleFacts) -> list[JudgeRequest]:
    """What the judge is sent about one sample: the protocol's requests (one per view) over its images, each
    scaled down to `max_pixels` (None: as the protocol's benchmark sends them, `Protocol.fit_image`)."""
    reference = sample.reference_image.load() if sample.reference_image is not None else None
    sources = tuple(protocol.fit_image(ref.load(), max_pixels) for ref in sample.sources)
    images = {"source": sources[0], "sources": sources,  # "sources": all of them, in the data's order
              "edited": protocol.fit_image(edited, max_pixels),
              "reference": protocol.fit_image(reference, max_pixels) if reference is not None else None}
    return protocol.requests(facts.view, images)


def judge_inputs(requests: list[JudgeRequest], mode: str) -> list[dict[str, Any]]:
    """Everything the judge is sent about one sample, per view: the messages (the system prompt, then the user
    turn's parts in order: each text in full, each image by its digest and size) and, in generate mode, the
    answer format's instruction as the turn's last text; in logits mode each question's text and the start of
    the reply its answer is read after (a verbatim format's: filled in once judged, `record_replies`). A resent
    (re-asked) prompt is the same but for the strict instruction."""
    out = []
    for request in requests:
        parts = [{"text": part.text} if isinstance(part, TextPart) else image_digest(part.image)
                 for part in request.content]
        entry: dict[str, Any] = {"view": request.view}
        if mode == "generate":
            instruction = request.answer_format.instruction(request.questions)
            if instruction:
                parts.append({"text": instruction})
        elif request.answer_format.reply_layout(request.questions) is not None:
            # read along the format's reply: nothing is added to the user turn; the reply each answer was read
            # after is known once judged (`record_replies`)
            entry["questions"] = [{"name": q.name, "text": "", "reply_prefix": None} for q in request.questions]
        else:
            prompts = [request.answer_format.scale_prompt(q) for q in request.questions]
            entry["questions"] = [{"name": q.name, "text": sp.text, "reply_prefix": sp.reply_prefix}
                                  for q, sp in zip(request.questions, prompts)]
        entry["messages"] = ([{"role": "system", "text": request.system}] if request.system else []) + \
            [{"role": "user", "content": parts}]
        out.append(entry)
    return out


def record_replies(inputs: Optional[list[dict[str, Any]]], judgement: Judgement) -> None:
    """Logits mode along a reply layout: each question's entry in the judge-input log gets the reply its answer
    was read after (the supplied text, with what the judge generated where free text came first)."""
    for entry in inputs or []:
        for question in entry.get("questions") or []:
            if question["name"] in (judgement.reply_prefixes or {}):
                question["reply_prefix"] = judgement.reply_prefixes[question["name"]]


def judge_batch(judge, batch: list[Sample], outcomes: dict[str, JudgeOutcome],
                load_edited: Callable[[Sample], Image.Image], *, max_pixels: Optional[int], protocol: Protocol,
                facts: dict[str, SampleFacts], mode: str) -> None:
    """Judge a batch in one call of the policy (bench_lib.judges.policy); if that fails, judge its samples one by
    one to isolate the culprit. `facts`: each sample's, by id; `mode`: the judge mode."""
    requests, ready = [], []
    for sample in batch:
        try:
            sample_views = sample_requests(sample, load_edited(sample), max_pixels, protocol, facts[sample.id])
            outcomes[sample.id].inputs = judge_inputs(sample_views, mode)
            requests.append(sample_views)
            ready.append(sample)
        except Exception as err:
            outcomes[sample.id].status = "invalid_input"
            outcomes[sample.id].error = f"cannot read an image for judging: {error_text(err)}"
    if not ready:
        return
    failure = kind = None
    try:
        judgements = judge_samples(judge, requests, mode=mode)
    except JudgeBudgetReached:
        if len(ready) == 1:
            raise
        stopped = None  # one at a time: the samples whose requests were all answered (memoised) keep them
        for sample in ready:
            try:
                judge_batch(judge, [sample], outcomes, load_edited, max_pixels=max_pixels, protocol=protocol,
                            facts=facts, mode=mode)
            except JudgeBudgetReached as err:
                stopped = err
                outcomes[sample.id].status = NOT_JUDGED
        if stopped is not None:
            raise stopped from None
        return
    except Exception as err:
        if is_fatal(err):
            raise
        if isinstance(err, JudgeUnavailable):  # a server that failed for good: its reason says it all
            warn_every_rank("judging %s failed: %s", [s.id for s in ready], error_text(err))
        else:
            warn_every_rank("judging %s failed:\n%s", [s.id for s in ready], traceback.format_exc())
        failure, kind = error_text(err), exception_type(err)
    if failure is not None:
        free_memory()  # outside the except block, so the failed batch's tensors can go
        if len(ready) == 1:
            outcome = outcomes[ready[0].id]
            outcome.status, outcome.error, outcome.exception = "judge_failed", failure, kind
            return
        for sample in ready:  # one at a time, so only the culprit fails
            judge_batch(judge, [sample], outcomes, load_edited, max_pixels=max_pixels, protocol=protocol,
                        facts=facts, mode=mode)
        return
    for sample, judgement in zip(ready, judgements):
        outcome = outcomes[sample.id]
        outcome.judgement = judgement
        record_replies(outcome.inputs, judgement)
        missing = sorted(set(facts[sample.id].questions) - set(judgement.answers or {}))
        if judgement.error is None and missing:  # a judge backend bug: a judgement must answer every question
            judgement.error = f"the judge returned no answer to {missing}"
        if judgement.error is not None:  # unparseable twice, or NaN/inf: never a score
            outcome.status, outcome.error = "judge_failed", judgement.error


def judge_record(sample_id: str, outcome: JudgeOutcome, attempt: int) -> dict[str, Any]:
    judgement = outcome.judgement or Judgement()  # None: the judge never answered (an exception or bad input)
    return {"id": sample_id, "status": outcome.status, "error": outcome.error,
            "answers": judgement.answers, "distributions": judgement.distributions, "rationale": judgement.rationale,
            "parse": judgement.parse if outcome.judgement is not None else None,
            "raw": judgement.raw, "digit_mass": judgement.digit_mass, "tokens": judgement.tokens, "attempt": attempt,
            **({"partial_answers": judgement.partial_answers} if judgement.partial_answers is not None else {}),
            **({"partial_distributions": judgement.partial_distributions}
               if judgement.partial_distributions is not None else {}),
            **({"inputs": outcome.inputs} if outcome.inputs is not None else {})}


# --- the plan -------------------------------------------------------------------------------------------


def length_batches(lengths: list[float], batch_size: int) -> list[list[int]]:
    """Batches of indices, with items of similar length together (less left padding, less wasted compute).
    Ties keep their original order, so the batching is deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def judge_length(sample: Sample, edited_size: tuple[int, int], protocol: Protocol, facts: SampleFacts,
                 max_pixels: int) -> float:
    """An estimate of the judge's prompt length in tokens, from image headers and text lengths: a vision token
    per 32x32 pixels (Qwen3-VL; 28x28 for Qwen2.5-VL), a text token per ~4 characters, over every view the
    protocol asks about the sample."""
    sizes = {"source": sample.source_image.size(), "edited": edited_size,
             "reference": sample.reference_image.size() if sample.reference_image is not None else None,
             **{f"source {k}": ref.size() for k, ref in enumerate(sample.sources)}}
    names = {"source": "source", "edited": "edited", "reference": "reference",
             "sources": tuple(f"source {k}" for k in range(len(sample.sources)))}
    total = 0.0
    for ask in protocol.asks(facts.view, names):  # images stand in as their names
        pixels = sum(min(sizes[name][0] * sizes[name][1], max_pixels or sizes[name][0] * sizes[name][1])
                     for _, name in ask.images if sizes.get(name))
        total += pixels / 1024 + (len(ask.context) + sum(len(q.text) for q in ask.questions)) / 4
    return total


def _safe_length(sample: Sample, job: JudgeJob, protocol: Protocol, facts: dict[str, SampleFacts],
                 max_pixels: int) -> float:
    try:
        return judge_length(sample, job.edited_size(sample), protocol, facts[sample.id], max_pixels)
    except Exception:  # an unreadable image fails when the sample is judged, with its own error
        return 0.0


def plan_judge_batches(jobs: list[JudgeJob], protocol: Protocol, facts: dict[str, SampleFacts], *,
                       batch_size: int, max_pixels: int) -> list[tuple[int, list[int]]]:
    """Main process: (job index, sample indices) of every batch, over ALL ranks' work. A job's batches hold
    samples of similar estimated prompt length; a batch never mixes jobs, so one job's scores don't depend on
    which other jobs run. Bitwise-equal scores on 1 and 2 processes: tests/test_multiprocess.py (fp32, CPU)."""
    return [(j, batch) for j, job in enumerate(jobs) for batch in length_batches(
        [_safe_length(s, job, protocol, facts, max_pixels) for s in job.samples], batch_size)]


def deal(batches: list, world_size: int) -> list:
    """The batches in the order that makes accelerate's contiguous split deal them round-robin: rank r gets
    batches r, r + W, r + 2W, ... (each rank a mix of short and long prompts, and of every job)."""
    return [batches[i] for rank in range(world_size) for i in range(rank, len(batches), world_size)]


def load_judge(judge_cls: type, judge_cfg: Any, judge_common: Any, *, device, device_map, trust_remote_code: bool):
    return judge_cls(judge_cfg, judge=judge_common, device=device, device_map=device_map,
                     trust_remote_code=trust_remote_code)


class KeptJudge:
    """A judge kept loaded between runs in one process (the Python API's `keep_judge`): a run whose judge
    settings and device are those of the kept one uses it; any other run closes it and loads its own. `loads`
    counts the loads made through it."""

    def __init__(self):
        self.key: Optional[str] = None
        self.judge = None
        self.loads = 0

    def get(self, key: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """The judge for `key` and whether it was loaded now."""
        if self.judge is not None and self.key == key:
            return self.judge, False
        self.release()
        self.judge, self.key = load(), key
        self.loads += 1
        return self.judge, True

    def release(self) -> None:
        """Close the kept judge (if any) and give its memory back."""
        if self.judge is not None:
            self.judge.close()
            self.judge = self.key = None
        free_memory()


def judge_key(cfg, device, device_map) -> str:
    """What a loaded judge depends on: both judge sections, the device and trust_remote_code."""
    return json.dumps([cfg.judge.judge, dataclasses.asdict(cfg.judge), dataclasses.asdict(cfg.judge_backend),
                       str(device), device_map, cfg.run.trust_remote_code], sort_keys=True, default=str)


class JudgeStage:
    def __init__(self, dist: Distributed, cfg, protocol: Protocol, facts: dict[str, SampleFacts], *, logger,
                 kept: Optional[KeptJudge] = None):
        """`kept`: keep the judge loaded in it after the stage (and use it if it holds this run's judge)."""
        self.kept = kept
        self.dist = dist
        self.cfg = cfg  # the BenchmarkConfig
        self.protocol = protocol
        self.facts = facts  # each sample's, by id
        self.logger = logger
        self.timings = JudgeTimings()
        self.budget_reached: Optional[str] = None  # the judge's request budget stopped the stage (the same on all)

    def run(self, jobs: list[JudgeJob], plan: list[tuple[int, list[int]]], *,
            done_ok: int = 0) -> list[list[dict[str, Any]]]:
        """Judge this rank's batches of `plan` (the same on every rank); returns this rank's new judge records
        per job, in dataset order. `done_ok`: ok judgements kept from earlier attempts (for the early stop)."""
        dist, world = self.dist, self.dist.world_size
        mine = dist.shard(deal(plan, world))
        per_rank = [len(range(rank, len(plan), world)) for rank in range(world)]
        sizes = [[len(plan[i][1]) for i in range(rank, len(plan), world)] for rank in range(world)]
        judge = None
        dist.reset_peak_memory()  # the edit stage's peak is its own
        budget = self.judge_class(self.cfg).request_budget(self.cfg.judge_backend)
        if mine:  # load only on a rank that has something to judge
            t0 = time.perf_counter()

            def load():
                return load_judge(self.judge_class(self.cfg), self.cfg.judge_backend, self.cfg.judge,
                                  device=dist.device, device_map=dist.judge_device_map(),
                                  trust_remote_code=self.cfg.run.trust_remote_code)

            if self.kept is None:
                judge, loaded = load(), True
            else:
                judge, loaded = self.kept.get(judge_key(self.cfg, dist.device, dist.judge_device_map()), load)
            self.timings.load_judge = time.perf_counter() - t0
            self.timings.loads += int(loaded)
            judge.start_stage()  # a kept judge: nothing of the previous run's memo, budget or usage carries over
            if budget is not None:  # each process its share, the first `budget % world` one more
                judge.set_budget(budget // world + (dist.rank < budget % world))
        writers = {j: job.folder.record_writer(job.attempt, job.record_kind, dist.rank) for j, job in enumerate(jobs)}
        records: list[list[dict[str, Any]]] = [[] for _ in jobs]
        variants = sum(job.kind == EDITOR_JOB for job in jobs)
        names = [job.name for job in jobs] if variants == 1 else \
            [f"{variants} variants", *(job.name for job in jobs if job.kind != EDITOR_JOB)]
        label = "judge" if len(jobs) == 1 else f"judge ({', '.join(names)})"
        progress = Progress(label, sum(len(batch) for _, batch in plan), unit="judgement", enabled=dist.is_main)
        started = time.perf_counter()
        watch = RepeatedFailure(dist, "judged", done_ok=done_ok)
        rounds, stop, spent = max(per_rank, default=0), None, None
        for round_index in range(rounds):  # the same number of rounds on every rank
            attempts = []
            if round_index < len(mine):
                j, indices = mine[round_index]
                job = jobs[j]
                batch = [job.samples[i] for i in indices]
                outcomes = {s.id: JudgeOutcome() for s in batch}
                try:
                    judge_batch(judge, batch, outcomes, job.load_edited,
                                max_pixels=self.protocol.max_pixels(self.cfg.judge), protocol=self.protocol,
                                facts=self.facts, mode=self.cfg.judge.judge_mode)
                except JudgeBudgetReached as err:
                    spent = str(err)
                    for sample in batch:  # the samples it left unjudged: no record, a rerun judges them
                        if outcomes[sample.id].judgement is None and outcomes[sample.id].status == "ok":
                            outcomes[sample.id].status = NOT_JUDGED
                batch = [s for s in batch if outcomes[s.id].status != NOT_JUDGED]
                batch_records = [{**judge_record(s.id, outcomes[s.id], job.attempt),
                                  **({"on_source": True} if s.id in job.on_source else {})} for s in batch]
                writers[j].write(batch_records)
                records[j] += batch_records
                self.timings.judged += len(batch)
                position = round_index * world + dist.rank  # this batch's place in the plan (see deal())
                attempts = [((position, k), outcomes[s.id].exception, s.id, outcomes[s.id].error)
                            for k, s in enumerate(batch) if outcomes[s.id].status != "invalid_input"]
            stop = watch.barrier(attempts, last=round_index == rounds - 1)  # every rank's outcomes, on every rank
            progress.update_to(sum(sum(s[:round_index + 1]) for s in sizes))
            if stop:
                break
            if budget is not None:  # every rank stops after the round in which any rank spent its share
                spent = next((text for text in dist.all_gather([spent]) if text), None)
                if spent:
                    self.budget_reached = spent
                    break
        progress.close()
        self.timings.judge = time.perf_counter() - started
        peaks = dist.peak_memory()
        self.timings.max_memory_allocated, self.timings.max_memory_reserved = (peaks["max_memory_allocated"],
                                                                              peaks["max_memory_reserved"])
        if judge is not None:
            self.timings.usage = judge.usage_counts()
        if judge is not None and self.kept is None:
            judge.close()
        del judge
        free_memory()
        if stop:
            raise RunFailed(stop)
        positions = [{s.id: i for i, s in enumerate(job.samples)} for job in jobs]
        return [sorted(rs, key=lambda r: positions[j][r["id"]]) for j, rs in enumerate(records)]

    @staticmethod
    def judge_class(cfg) -> type:
        from .registry import JUDGES

        return JUDGES.get(cfg.judge.judge)
