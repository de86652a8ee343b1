"""The edit stage: its early stop (an editor that raises the same error on every sample stops the run at one
barrier on every rank, its records kept, so the fixed rerun resumes; anything less leaves the run going), and its
own accounting (what its timings and memory peaks count), with test editors registered like any backend."""

import json
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from conftest import IDENTITY_RUN
from launch import accelerate_launch
from PIL import Image
from test_judge_stage import ScriptedJudge, records, write_manifest

import bench_lib.edit_stage as edit_stage
import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import EDITORS, JUDGES, Editor, EditResult, register_editor, register_judge
from bench_lib.config import option
from bench_lib.data import ImageRef, Sample
from bench_lib.distributed import Distributed
from bench_lib.edit_stage import EditJob, EditStage
from bench_lib.failures import RunFailed
from bench_lib.store import RunFolder, read_results, read_run, save_png


@dataclass
class BrokenConfig:
    mixed: bool = option(False, result=True, help="Fail every sample, with errors of two types (a sweep variant's "
                                                  "setting); else as the class's `mode` says.")
    ok_from: int = option(0, result=True, help="With `mode` raise: the samples from this dataset index on are "
                                               "edited (0: none is).")


class BrokenEditor(Editor):
    """A test double registered through the real registry, like a pipeline called without an argument it
    requires: `mode` "raise" raises IndexError on every sample, "mixed" IndexError or ValueError by sample,
    "fixed" returns the source."""

    Config = BrokenConfig
    needs_model = False
    mode = "raise"

    def edit(self, sample, source, *, seed):
        mode = "mixed" if self.cfg.mixed else self.mode
        edited = 0 < self.cfg.ok_from <= sample.index
        if (mode == "raise" and not edited) or (mode == "mixed" and sample.index % 2 == 0):
            raise IndexError("list index out of range")
        if mode == "mixed":
            raise ValueError("a different error")
        return EditResult(source.copy())


def register_backends() -> None:
    """For this module's tests, and for tests/mp_worker.py (BENCH_TEST_REGISTER=test_edit_stage:register_backends)."""
    register_editor("test-broken")(BrokenEditor)
    register_judge("test-scripted")(ScriptedJudge)


@pytest.fixture
def broken_editor():
    register_backends()
    BrokenEditor.mode, ScriptedJudge.mode = "raise", "answer"
    yield BrokenEditor
    EDITORS.pop("test-broken")
    JUDGES.pop("test-scripted")
    BrokenEditor.mode, ScriptedJudge.mode = "raise", "answer"


def config(tmp_path, rows, **extra):
    missing = extra.pop("missing", ())
    return {"dataset": str(write_manifest(tmp_path / "data", rows, missing=missing)),
            "output_dir": str(tmp_path / "out"), "editor": "test-broken", "judge": "test-scripted", "baselines": "",
            **extra}


def test_the_same_error_on_the_first_8_samples_stops_the_run_and_the_fixed_rerun_resumes(broken_editor, tmp_path):
    out = tmp_path / "out"
    cfg = config(tmp_path, 14, missing={0, 3}, edit_batch_size=3)
    with pytest.raises(RunFailed, match=r"stopped early: the first 8 samples edited all failed with IndexError \(the "
                                        r"first, 's01': IndexError: list index out of range\); the records are kept"):
        runner.run(config_from_dict(cfg))
    # batches of 3: the invalid s00 and s03 don't count, so the 8 counted are known after the 4th batch (s11)
    edited = records(out, "edit")
    assert [r["id"] for r in edited] == [f"s{i:02d}" for i in range(12)]
    assert {r["status"] for r in edited} == {"edit_failed", "invalid_input"}
    assert not records(out, "judge") and not (out / "results.jsonl").exists()

    broken_editor.mode = "fixed"  # the same command after the fix resumes the folder
    runner.run(config_from_dict(cfg))
    run = read_run(out)
    assert [r["status"] for r in run["rows"]] == ["invalid_input", "ok", "ok", "invalid_input"] + ["ok"] * 10
    assert run["report"]["meta"]["attempt"] == 2


def test_different_errors_never_stop_early_and_a_run_with_nothing_scored_fails_after_its_reports(broken_editor,
                                                                                                 tmp_path):
    out = tmp_path / "out"
    broken_editor.mode = "mixed"
    cfg = config(tmp_path, 10, edit_batch_size=4, baselines="identity")
    with pytest.raises(RunFailed, match=r"nothing was scored: none of the 10 samples is ok \(10 edit_failed\)"):
        runner.run(config_from_dict(cfg))
    run = read_run(out)  # every report written and consistent
    assert {r["status"] for r in run["rows"]} == {"edit_failed"}
    assert run["report"]["baselines"]["identity"]["overall"]["count"] == 10  # baselines scored, and don't count
    assert (out / "report.md").exists() and (out / "gallery.html").exists()


def test_a_resumed_run_counts_its_earlier_successes_first(broken_editor, tmp_path):
    out = tmp_path / "out"
    broken_editor.mode = "fixed"
    runner.run(config_from_dict(config(tmp_path, 12, limit=4)))
    broken_editor.mode = "raise"  # 4 ok edits kept, then 8 failures: not the first 8, so the run goes on
    runner.run(config_from_dict(config(tmp_path, 12)))
    statuses = [r["status"] for r in read_run(out)["rows"]]
    assert statuses == ["ok"] * 4 + ["edit_failed"] * 8


def test_every_rank_stops_at_the_same_barrier_and_exits_1(broken_editor, tmp_path):
    """Two real processes, shards s00-s04 and s05-s09, batches of 2; s00-s07 fail, s08 and s09 are edited. After
    the second barrier 8 outcomes are known (s00-s03, s05-s08), but the first 8 in dataset order are not: they
    decide at the third (last) barrier, as on one process, where the run stops too. Both ranks stop there, with
    their records on disk, and the error is printed once."""
    manifest = write_manifest(tmp_path / "data", 10)
    out = tmp_path / "out"
    with pytest.raises(RunFailed, match="stopped early: the first 8 samples edited all failed with IndexError"):
        runner.run(config_from_dict(config(tmp_path, 10, ok_from=8, edit_batch_size=2,
                                           output_dir=str(tmp_path / "one"))))
    result = accelerate_launch(2, ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "test-broken",
                                   "--judge", "test-scripted", "--baselines", "", "--edit_batch_size", "2",
                                   "--ok_from", "8"],
                               timeout=300, check=False,
                               env={"BENCH_TEST_REGISTER": "test_edit_stage:register_backends"})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-6000:]
    markers = [json.loads((out / f"worker-{rank}.json").read_text()) for rank in (0, 1)]
    assert [m["world_size"] for m in markers] == [2, 2]  # checked inside each worker, after the stop
    assert markers[0]["failed"] == markers[1]["failed"] and "the first 8 samples edited" in markers[0]["failed"]
    assert output.count("stopped early: the first 8 samples edited all failed with IndexError") == 1
    assert "RunFailed" not in output  # one line, no traceback
    for rank, ids in ((0, ["s00", "s01", "s02", "s03", "s04"]), (1, ["s05", "s06", "s07", "s08", "s09"])):
        path = out / "records" / f"attempt-0001.edit.rank-{rank:05d}.jsonl"
        assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ids
    assert not list((out / "records").glob("*.judge.*")) and not (out / "results.jsonl").exists()


LOAD_S = 0.3


def run_folder(path):
    """An output folder as the run has it when the edit stage starts (the lock made it)."""
    path.mkdir(parents=True, exist_ok=True)
    return RunFolder(path)


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
    (records,) = stage.run([EditJob(run_folder(tmp_path / "out"), 1, slow_editor, SlowLoadConfig(), samples)],
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
    jobs = [EditJob(run_folder(tmp_path / colour), 1, slow_editor, SlowLoadConfig(colour), samples, label=colour)
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
    (records,) = cpu.run([EditJob(run_folder(tmp_path / "cpu"), 1, slow_editor, SlowLoadConfig(), samples)])
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
    stage.run([EditJob(run_folder(tmp_path / colour), 1, slow_editor, SlowLoadConfig(colour), samples, label=colour)
               for colour in ("red", "blue")], close=True)
    first, second = stage.job_timings
    assert (first.max_memory_allocated, first.max_memory_reserved) == (105, 210)
    assert (second.max_memory_allocated, second.max_memory_reserved) == (103, 206)
    assert (stage.timings.max_memory_allocated, stage.timings.max_memory_reserved) == (105, 210)
    assert memory.resets == 2


def test_the_seed_is_recorded_with_the_edit_and_rows_read_it_from_there(broken_editor, tmp_path, monkeypatch):
    """Every edit record (edited, failed or invalid) carries the seed its sample is edited with; the row's seed is
    the record's (a baseline's row has none); an edit recorded without a seed (an earlier harness) gets the
    sample's seed when the run resumes. The protocol's view of each sample is made once per run."""
    import bench_lib.protocols.base as protocol_base
    from bench_lib.store import sample_seed

    views, real_view_of = [], protocol_base.view_of

    def view_of(sample, *args):
        views.append(sample.id)
        return real_view_of(sample, *args)

    monkeypatch.setattr(protocol_base, "view_of", view_of)
    broken_editor.mode = "fixed"
    out = tmp_path / "out"
    cfg = config(tmp_path, 4, missing={1}, seed=7, baselines="identity")
    runner.run(config_from_dict(cfg))
    assert sorted(views) == ["s00", "s01", "s02", "s03"]  # once per sample: judging, planning and rows share it
    edited = {r["id"]: r for r in records(out, "edit")}
    assert {i: r["seed"] for i, r in edited.items()} == {f"s{i:02d}": sample_seed(7, f"s{i:02d}") for i in range(4)}
    run = read_run(out)
    assert [r["seed"] for r in run["rows"]] == [edited[r["id"]]["seed"] for r in run["rows"]]
    assert {r["seed"] for r in read_results(out / "baselines" / "identity.jsonl")} == {None}

    for path in (out / "records").glob("*.edit.*"):  # as an earlier harness wrote them: no seed
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "seed"}) + "\n" for r in lines))
    monkeypatch.setattr(runner, "sample_seed", lambda seed, sample_id: 1000 + int(sample_id[1:]))  # the run's rule
    runner.run(config_from_dict({**cfg, "overwrite": False}))
    assert [r["seed"] for r in read_run(out)["rows"]] == [1000, 1001, 1002, 1003]


def test_an_undecodable_reference_image_is_invalid_input_before_any_edit(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    (tmp_path / "ref.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [{"id": "bad_ref", "category": "physics", "instruction": "melt it", "source_image": "a.png",
             "reference_image": "ref.png"},
            {"id": "good", "category": "physics", "instruction": "melt it", "source_image": "a.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    edited = []
    real = edit_stage.load_editor

    def counting_load(*args, **kwargs):
        editor = real(*args, **kwargs)
        edit = editor.edit
        editor.edit = lambda sample, image, *, seed: edited.append(sample.id) or edit(sample, image, seed=seed)
        return editor

    edit_stage.load_editor = counting_load
    try:
        runner.run(config_from_dict({**IDENTITY_RUN, "dataset": str(tmp_path / "m.jsonl"),
                                     "output_dir": str(tmp_path / "out")}))
    finally:
        edit_stage.load_editor = real
    results = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert results["bad_ref"]["status"] == "invalid_input" and "reference image" in results["bad_ref"]["error"]
    assert results["bad_ref"]["edited_image"] is None and results["good"]["status"] == "ok"
    assert len(edited) == 1  # only the good sample was edited
