"""Everything that talks to accelerate's process state: the process group, sharding, lockstep barriers, gather.

No other module touches the process state; the runner and the stages use this object. Two other parts of
accelerate are used elsewhere, neither of which touches it: its logger (`accelerate.logging.get_logger`, main
process only by default) in the runner and the stages, and `init_empty_weights` in the diffusers editor (a LoRA
adapter's shapes are checked against an empty-weight copy of the transformer). The trackers (bench_lib.tracking)
log through the `Accelerator` this object holds (`accelerator.log`, `accelerator.trackers`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Optional, TypeVar

import torch

T = TypeVar("T")


class Distributed:
    def __init__(self, *, timeout_s: int, accelerator: Any = None, log_with: Optional[list[str]] = None,
                 logging_dir: Optional[str] = None):
        """The run's process state. `accelerator`: one the caller made already (a training script's), used as it
        is: no second process group, its own timeout, and `close()` leaves it (and its trackers) running.
        Otherwise a new `Accelerator` with the process-group timeout and, with `log_with`, accelerate's trackers
        writing under `logging_dir` (started by `start_trackers`, ended by `close`)."""
        self.owned = accelerator is None
        if accelerator is not None:
            self.accelerator = accelerator
            self.state = accelerator.state
            self._check_process_group()
            return
        # Before the process group exists: imported after it (transformers imports it when a model loads), this
        # module keeps the group alive past destroy_process_group(), so gloo's threads outlive close() and can
        # free a collective's tensors while the interpreter shuts down: SIGABRT at exit ("terminate called
        # without an active exception") after a finished run. tests/mp_worker.py checks the threads are gone.
        import torch.distributed.fsdp  # noqa: F401
        from accelerate import Accelerator, InitProcessGroupKwargs, PartialState

        if PartialState._shared_state and torch.distributed.is_initialized():
            # A PartialState made earlier has already created the process group with its own
            # (10 minute) timeout, and ours would be silently ignored.
            raise RuntimeError("accelerate state was initialised before Distributed(); the timeout would not apply "
                               "(from Python, pass your Accelerator: bench_lib.evaluate(..., accelerator=accelerator))")
        trackers = {}
        if log_with:
            from accelerate.utils import ProjectConfiguration

            trackers = {"log_with": list(log_with),
                        "project_config": ProjectConfiguration(project_dir=logging_dir, logging_dir=logging_dir)}
        self.accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))],
                                       **trackers)
        self.state = self.accelerator.state
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.world_size:
            # e.g. a multi-process CPU launch without ACCELERATE_USE_CPU=1: every process would believe
            # it is alone and run the whole benchmark into the same output folder. One line from each process.
            from .failures import RunFailed

            raise RunFailed(
                f"the launcher started {launched} processes but this one sees a world of {self.world_size}: "
                "on a machine without GPUs set ACCELERATE_USE_CPU=1 (see accelerate_configs/cpu.yaml).")
        self._check_process_group()

    @property
    def rank(self) -> int:
        return self.state.process_index

    @property
    def world_size(self) -> int:
        return self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.state.is_main_process

    @property
    def is_local_main(self) -> bool:
        return self.state.is_local_main_process

    @property
    def device(self) -> torch.device:
        return self.state.device

    def judge_device_map(self) -> Optional[dict]:
        """`{"": this rank's device}` on accelerators, the very device the editor used (accelerate's, which need
        not be the local process index); never "auto" under data parallelism. None on CPU."""
        if self.device.type == "cpu":
            return None
        return {"": self.device.index if self.device.index is not None else self.device.type}

    def reset_peak_memory(self) -> None:
        """Start a new high-water mark of this rank's device memory (a stage's, a job's); CUDA only."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> dict[str, Optional[int]]:
        """This rank's peak allocated and reserved device memory (bytes) since the last reset: how close it came
        to running out. None on devices without these statistics (CPU): nothing was measured."""
        if self.device.type != "cuda":
            return {"max_memory_allocated": None, "max_memory_reserved": None}
        return {"max_memory_allocated": torch.cuda.max_memory_allocated(self.device),
                "max_memory_reserved": torch.cuda.max_memory_reserved(self.device)}

    def _check_process_group(self) -> None:
        """Fail fast with a clear message if the ranks cannot talk, before any model is loaded."""
        ranks = self.gather([self.rank])
        if ranks is not None and ranks != list(range(self.world_size)):
            raise RuntimeError(f"process group check failed: gathered ranks {ranks}, expected {self.world_size}")

    def main_first(self, fn: Callable[[], T], *, local: bool = False) -> T:
        """Run `fn` on the (local) main process first, then on the others (datasets cache, model builds).

        If `fn` raises on the main process, the others are still released from the barrier and run `fn`
        themselves (getting the same error) instead of hanging until the timeout.
        """
        first = self.is_local_main if local else self.is_main
        if not first:
            self.barrier()
        try:
            return fn()
        finally:
            if first:
                self.barrier()

    def on_local_main(self, fn: Callable[[], None]) -> None:
        """Run `fn` on each node's local main process only (a download into the node's cache) while the node's
        other processes wait; if it fails on any node, every rank raises (a `ConfigError` as one, anything else
        as a RuntimeError naming it). The wait is a gather under the process-group timeout: it must cover the
        slowest node's `fn`."""
        from .config import ConfigError

        failure: Optional[BaseException] = None
        if self.is_local_main:
            try:
                fn()
            except BaseException as err:  # a Ctrl-C too: re-raised below, after every rank has heard of it
                failure = err
        problems = self.all_gather([None if failure is None else (isinstance(failure, ConfigError),
                                                                  f"{type(failure).__name__}: {failure}")])
        if failure is not None:
            raise failure
        for problem in problems:
            if problem is not None:
                is_config, text = problem
                raise ConfigError(text.removeprefix("ConfigError: ")) if is_config else \
                    RuntimeError(f"another node's local main process failed: {text}")

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the main process only; every rank gets its result, or raises its `ConfigError`. Any other
        error of `fn` reaches every rank too (the main process raises it, the others a `RunFailed` naming it), a
        KeyboardInterrupt on the main process included, so no rank waits for the process-group timeout at the
        gather."""
        from .config import ConfigError
        from .failures import RunFailed

        outcome: list[tuple[Any, Optional[str], Optional[str]]] = []
        failure: Optional[BaseException] = None
        if self.is_main:
            try:
                outcome = [(fn(), None, None)]
            except ConfigError as err:
                outcome = [(None, str(err), "config")]
            except BaseException as err:  # a Ctrl-C too: re-raised below, after every rank has heard of it
                failure = err
                outcome = [(None, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__, "error")]
        result, error, kind = self.all_gather(outcome)[0]
        if kind == "config":
            raise ConfigError(error)
        if kind == "error":
            if failure is not None:
                raise failure
            raise RunFailed(f"the main process failed: {error}")
        return result

    def shard(self, items: list[T]) -> list[T]:
        """This rank's contiguous block of `items`; no padding (padding duplicates and loses samples)."""
        with self.state.split_between_processes(items, apply_padding=False) as shard:
            return list(shard)

    def shard_sizes(self, shard_size: int) -> list[int]:
        """Every rank's shard size, on every rank."""
        return self.all_gather([shard_size])

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def all_gather(self, items: list[Any]) -> list[Any]:
        """Concatenation of every rank's `items` (small picklable objects), on every rank."""
        if self.world_size == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def gather(self, items: list[Any]) -> Optional[list[Any]]:
        """Like `all_gather`, but only the main process gets the result (others get None)."""
        gathered = self.all_gather(items)
        return gathered if self.is_main else None

    def start_trackers(self, project: str, config: dict[str, Any]) -> None:
        """Main process: start the trackers this object's own `Accelerator` was made with (none: nothing to do).
        W&B writes its files under the logging folder too."""
        if self.owned and self.accelerator.log_with:
            folder = self.accelerator.logging_dir
            self.accelerator.init_trackers(project, config=config,
                                           init_kwargs={"wandb": {"dir": str(folder)}} if folder else None)

    def drop_trackers(self) -> None:
        """Main process: finish and forget this object's own trackers, each one's failure a warning naming it (the
        trackers are an extra: a run's reports are written before they log)."""
        if not self.owned:
            return
        import logging

        for tracker in list(self.accelerator.trackers):
            try:
                tracker.finish()
            except Exception as err:
                logging.getLogger(__name__).warning("tracker %s: could not finish (%s: %s)", tracker.name,
                                                    type(err).__name__, " ".join(str(err).split())[:300])
        self.accelerator.trackers = []

    def close(self) -> None:
        """End the trackers and the process group, unless the accelerator is the caller's."""
        if self.owned:
            self.drop_trackers()
            self.accelerator.end_training()
