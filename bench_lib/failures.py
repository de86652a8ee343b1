"""Runs that score nothing end with exit code 1, not 0: in a job array a run whose every sample failed must not
pass for a finished one.

Two rules (the command line maps `RunFailed` to one line on stderr and exit code 1):

- **Early stop.** Per stage (each edit job: a plain run's edits, or one sweep variant's; and the judge stage
  once), the first `EARLY_STOP_SAMPLES` counted samples decide: when they all failed with the same exception
  type (the editor raised; the judge raised or its transport failed), every rank stops at the same barrier, the
  records written so far are kept (a rerun after the fix resumes) and the run ends with `RunFailed` naming the
  error. Counted: every sample that was edited (or judged) in this stage; not counted: `invalid_input` samples.
  An answer the judge gave that did not parse counts as a sample that did *not* raise, so unparsed answers never
  stop a run (they are asked again and recorded as `judge_failed`). "First" is deterministic: samples that an
  earlier attempt already did successfully come first (so a resumed run that did real work before is not
  stopped), then the stage's own order: dataset order for edits, the judge plan's batch order for judgements
  (the same plan whatever the number of processes). The decision is taken at the first per-batch barrier at
  which the first `EARLY_STOP_SAMPLES` counted outcomes in that order are known over all ranks (the edit stage's
  ranks edit contiguous shards, so a rank's later samples can be known before another's earlier ones: those
  wait), or at the stage's last barrier when it has fewer (all of them decide); it is taken once, and every rank
  takes it from the same gathered outcomes, so no rank waits at a barrier the others left.
- **Nothing scored.** A run that finishes with no editor sample scored (status ok; baselines don't count), for
  any reason, writes its whole report set and then raises `RunFailed`; so does one whose every ok row is only
  `failure_policy: reference`'s fill-in (no answer of its judgement parsed). A sweep writes every variant's reports
  and the sweep report, then raises if any variant scored nothing, naming those variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

EARLY_STOP_SAMPLES = 8

# One sample's outcome, as gathered at a barrier: (order, exception type or None, sample id, error text or None).
# `order` sorts the stage's samples (a tuple of ints); the exception type is None for an outcome that is not an
# exception (ok, or an answer that did not parse).
Attempt = tuple[tuple[int, ...], Optional[str], str, Optional[str]]


class RunFailed(Exception):
    """The run stopped, or finished, without scoring what it should: one line on stderr, exit code 1.

    `reported`: the line is out already. A decision every rank took together is logged once, by the main process,
    before the ranks leave their last barrier (a launcher stops the other processes as soon as one exits with an
    error, so the main process must not be the last to speak).
    """

    def __init__(self, message: str, *, reported: bool = False):
        super().__init__(message)
        self.reported = reported


def exception_type(err: BaseException) -> str:
    """The key two failures must share to count as the same error."""
    kind = type(err)
    return f"{kind.__module__}.{kind.__qualname__}"


class RepeatedFailure:
    """The early-stop rule of one stage (see the module's docstring), fed at every per-batch barrier."""

    def __init__(self, dist: Any, what: str, *, done_ok: int = 0):
        self.dist = dist
        self.what = what  # "edited", "edited for variant step-100", "judged"
        self.done_ok = done_ok  # successes of earlier attempts: they come first
        self.known: list[Attempt] = [((-1, i), None, "", None) for i in range(min(done_ok, EARLY_STOP_SAMPLES))]
        self.decided = False

    def barrier(self, attempts: Sequence[Attempt], *, last: bool,
                settled: Optional[tuple[int, ...]] = None) -> Optional[str]:
        """The per-batch barrier. While the rule is undecided every rank's outcomes of this round are gathered on
        every rank (the gather is the barrier); after that, a plain barrier. `settled`: every outcome of an order
        below it is known (None: every order below the known ones is, as when each round's batches are the plan's
        next ones); only those decide, so the first samples in the stage's order decide whatever the number of
        processes. Returns the reason to stop, the same on every rank, or None."""
        if self.decided:
            self.dist.barrier()
            return None
        self.known += self.dist.all_gather(list(attempts))
        ready = sorted((attempt for attempt in self.known if last or settled is None or attempt[0] < settled),
                       key=lambda attempt: attempt[0])
        if len(ready) < EARLY_STOP_SAMPLES and not last:
            return None
        self.decided = True
        first = ready[:EARLY_STOP_SAMPLES]
        kinds = {kind for _, kind, _, _ in first}
        if not first or kinds != {first[0][1]} or first[0][1] is None:
            return None
        _, kind, sample_id, error = first[0]
        which = f"the first {len(first)} samples" if len(self.known) >= EARLY_STOP_SAMPLES else \
            f"all {len(first)} samples"
        text = " ".join((error or kind).split())
        if len(text) > 300:
            text = text[:297] + "..."
        return (f"stopped early: {which} {self.what} all failed with {kind.rsplit('.', 1)[-1]} (the first, "
                f"{sample_id!r}: {text}); the records are kept, so a rerun after the fix resumes (tracebacks in the "
                "warnings above).")


class NothingScored(RunFailed):
    """A run (or a sweep variant) finished with no editor sample scored; its reports are written. `unscored`:
    (sweep variant or "", why) of each output folder that scored nothing."""

    def __init__(self, message: str, *, unscored: list[tuple[str, str]]):
        super().__init__(message)
        self.unscored = unscored


def nothing_scored(unscored: list[tuple[str, str]]) -> NothingScored:
    """`unscored`: (sweep variant or "", why) of each output folder that scored nothing."""
    if len(unscored) == 1 and not unscored[0][0]:
        return NothingScored(f"nothing was scored: {unscored[0][1]}", unscored=unscored)
    return NothingScored(f"{len(unscored)} sweep variant(s) scored nothing: "
                         + "; ".join(f"{label}: {why}" for label, why in unscored), unscored=unscored)
