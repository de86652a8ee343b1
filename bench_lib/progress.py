"""Progress people can read: samples done of the total, over all ranks, with an ETA, on the main process."""

from __future__ import annotations


class Progress:
    """A bar counted in samples. The stages run in lockstep (a barrier after every batch or round), so after
    batch b every rank has done its first b batches: the main process computes the total done over all ranks
    from the shard sizes, without asking the others."""

    def __init__(self, stage: str, total: int, *, enabled: bool, unit: str = "sample"):
        from tqdm.auto import tqdm

        self.base = 0  # samples of the jobs already finished
        self.bar = tqdm(total=total, desc=stage, unit=unit, disable=not enabled or total == 0,
                        dynamic_ncols=True, mininterval=1.0)

    def update_to(self, done: int) -> None:
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
