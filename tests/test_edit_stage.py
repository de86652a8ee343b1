"""The edit stage's early stop: an editor that raises the same error on every sample stops the run at one
barrier on every rank, its records kept, so the fixed rerun resumes; anything less leaves the run going."""

import json
from dataclasses import dataclass

import pytest
from launch import accelerate_launch
from test_judge_stage import ScriptedJudge, records, write_manifest

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import EDITORS, JUDGES, Editor, EditResult, register_editor, register_judge
from bench_lib.config import option
from bench_lib.failures import RunFailed
from bench_lib.store import read_run


@dataclass
class BrokenConfig:
    mixed: bool = option(False, result=True, help="Fail every sample, with errors of two types (a sweep variant's "
                                                  "setting); else as the class's `mode` says.")


class BrokenEditor(Editor):
    """A test double registered through the real registry, like a pipeline called without an argument it
    requires: `mode` "raise" raises IndexError on every sample, "mixed" IndexError or ValueError by sample,
    "fixed" returns the source."""

    Config = BrokenConfig
    needs_model = False
    mode = "raise"

    def edit(self, sample, source, *, seed):
        mode = "mixed" if self.cfg.mixed else self.mode
        if mode == "raise" or (mode == "mixed" and sample.index % 2 == 0):
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


def test_every_rank_stops_at_the_same_barrier_and_exits_1(tmp_path):
    """Two real processes, shards s00-s04 and s05-s09, batches of 2: after the second barrier 8 failures are
    known (4 per rank), so both ranks stop there, with their records on disk, and the error is printed once."""
    manifest = write_manifest(tmp_path / "data", 10)
    out = tmp_path / "out"
    result = accelerate_launch(2, ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "test-broken",
                                   "--judge", "test-scripted", "--baselines", "", "--edit_batch_size", "2"],
                               timeout=300, check=False,
                               env={"BENCH_TEST_REGISTER": "test_edit_stage:register_backends"})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-6000:]
    markers = [json.loads((out / f"worker-{rank}.json").read_text()) for rank in (0, 1)]
    assert [m["world_size"] for m in markers] == [2, 2]  # checked inside each worker, after the stop
    assert markers[0]["failed"] == markers[1]["failed"] and "the first 8 samples edited" in markers[0]["failed"]
    assert output.count("stopped early: the first 8 samples edited all failed with IndexError") == 1
    assert "RunFailed" not in output  # one line, no traceback
    for rank, ids in ((0, ["s00", "s01", "s02", "s03"]), (1, ["s05", "s06", "s07", "s08"])):
        path = out / "records" / f"attempt-0001.edit.rank-{rank:05d}.jsonl"
        assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ids
    assert not list((out / "records").glob("*.judge.*")) and not (out / "results.jsonl").exists()
