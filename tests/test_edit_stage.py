"""The edit stage's own accounting, with a test editor registered like any backend: what its timings count."""

import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from PIL import Image

from bench_lib.backends import EDITORS, Editor, EditResult, register_editor
from bench_lib.config import option
from bench_lib.data import ImageRef, Sample
from bench_lib.distributed import Distributed
from bench_lib.edit_stage import EditJob, EditStage
from bench_lib.store import RunFolder, save_png

LOAD_S = 0.3


@dataclass
class SlowLoadConfig:
    colour: str = option("red", result=True, help="The colour every edit is painted.")


class SlowLoadEditor(Editor):
    """Loads slowly (a sleep, like a model load), edits at once."""

    Config = SlowLoadConfig
    loads = 0

    def __init__(self, cfg, **kwargs):
        super().__init__(cfg, **kwargs)
        time.sleep(LOAD_S)
        type(self).loads += 1

    def edit(self, sample, source, *, seed):
        return EditResult(Image.new("RGB", source.size, self.cfg.colour))


@pytest.fixture
def slow_editor():
    register_editor("test-slow-load")(SlowLoadEditor)
    SlowLoadEditor.loads = 0
    yield SlowLoadEditor
    EDITORS.pop("test-slow-load")


@pytest.fixture(scope="module")
def dist():
    dist = Distributed(timeout_s=60)
    yield dist
    dist.close()


def make_samples(folder, n):
    samples = []
    for i in range(n):
        path = folder / f"source_{i}.png"
        save_png(Image.new("RGB", (16, 16), "white"), path)
        samples.append(Sample(index=i, id=f"s{i}", category="physics", instruction="paint it",
                              source_image=ImageRef(path=path)))
    return samples


def stage_for(dist):
    return EditStage(dist, seed_of=lambda i: 0, batch_size=2, trust_remote_code=False,
                     logger=SimpleNamespace(info=lambda *a, **k: None))


def test_edit_time_excludes_the_editor_load(slow_editor, dist, tmp_path):
    """The load happens inside the first batch; it is counted in `load_editor`, never also in `edit` (else a 2 s
    load over 4 instant edits reads 0.54 s/image). The two are disjoint intervals inside the stage's wall time,
    whatever the machine's speed."""
    samples = make_samples(tmp_path, 4)
    stage = stage_for(dist)
    started = time.perf_counter()
    (records,) = stage.run([EditJob(RunFolder(tmp_path / "out"), 1, slow_editor, SlowLoadConfig(), samples)],
                           close=False)
    total = time.perf_counter() - started
    stage.close()
    t = stage.timings
    assert [r["status"] for r in records] == ["ok"] * 4 and t.loads == 1 and slow_editor.loads == 1
    assert t.load_editor >= LOAD_S
    assert t.edit + t.load_editor <= total


def test_edit_time_excludes_a_reload_between_jobs(slow_editor, dist, tmp_path):
    """A second job whose editor can't be switched in place loads again, mid-stage: that load is not edit time
    either."""
    samples = make_samples(tmp_path, 2)
    stage = stage_for(dist)
    jobs = [EditJob(RunFolder(tmp_path / colour), 1, slow_editor, SlowLoadConfig(colour), samples, label=colour)
            for colour in ("red", "blue")]
    started = time.perf_counter()
    stage.run(jobs, close=False)
    total = time.perf_counter() - started
    stage.close()
    t = stage.timings
    assert t.loads == 2 and t.load_editor >= 2 * LOAD_S
    assert t.edit + t.load_editor <= total
    for job in stage.job_timings:  # each job's share too
        assert job.loads == 1 and job.edit + job.load_editor <= total


class FakeCudaMemory:
    """torch.cuda's peak-memory statistics, driven by the test: `use(n)` allocates n bytes (reserving twice)."""

    def __init__(self):
        self.current = self.peak = 0
        self.resets = 0

    def use(self, n):
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n):
        self.current -= n

    def install(self, monkeypatch):
        import torch

        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2 * self.peak)
        monkeypatch.setattr(Distributed, "device", property(lambda dist: torch.device("cuda", 0)))

    def reset(self, device=None):
        self.resets += 1
        self.peak = self.current


def test_each_job_records_its_peak_device_memory(slow_editor, dist, tmp_path, monkeypatch):
    """Per job (a sweep's variant): the peak allocated and reserved bytes since the job began, the stage's own
    maximum over jobs; a stage run on a CPU records None (not 0: nothing was measured)."""
    samples = make_samples(tmp_path, 2)
    cpu = stage_for(dist)
    (records,) = cpu.run([EditJob(RunFolder(tmp_path / "cpu"), 1, slow_editor, SlowLoadConfig(), samples)])
    assert [r["status"] for r in records] == ["ok", "ok"]
    for t in (cpu.timings, *cpu.job_timings):
        assert t.max_memory_allocated is None and t.max_memory_reserved is None
    memory = FakeCudaMemory()
    memory.install(monkeypatch)
    real_edit = SlowLoadEditor.edit

    def edit(self, sample, source, *, seed):  # the red job's edits take 5 bytes, the blue job's 3
        memory.use(5 if self.cfg.colour == "red" else 3)
        memory.free(5 if self.cfg.colour == "red" else 3)
        return real_edit(self, sample, source, seed=seed)

    monkeypatch.setattr(SlowLoadEditor, "edit", edit)
    memory.use(100)  # whatever the process holds before the stage (the weights it keeps count in every peak)
    stage = stage_for(dist)
    stage.run([EditJob(RunFolder(tmp_path / colour), 1, slow_editor, SlowLoadConfig(colour), samples, label=colour)
               for colour in ("red", "blue")], close=True)
    first, second = stage.job_timings
    assert (first.max_memory_allocated, first.max_memory_reserved) == (105, 210)
    assert (second.max_memory_allocated, second.max_memory_reserved) == (103, 206)
    assert (stage.timings.max_memory_allocated, stage.timings.max_memory_reserved) == (105, 210)
    assert memory.resets == 2
