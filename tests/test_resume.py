"""Crash-safe, resumable runs: kill -9 a rank mid-stage, rerun the same command, get the same results."""

import json

from launch import TINY_ARGS, accelerate_launch
from test_multiprocess import assert_same_results, make_manifest

import bench_lib.cli as cli
from bench_lib.store import read_results


def crash(out, num_processes, manifest, kill, *extra):
    result = accelerate_launch(num_processes, ["--dataset", str(manifest), "--output_dir", str(out), *TINY_ARGS,
                                               *extra], timeout=300, check=False, env={"BENCH_TEST_KILL": kill})
    assert result.returncode != 0
    assert not (out / "results.jsonl").exists() and not list(out.glob("worker-*.json"))  # no rank finished


def records(out, stage):
    return [json.loads(line) for p in sorted((out / "records").glob(f"*.{stage}.*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def test_kill_in_each_stage_then_resume_with_another_process_count(tmp_path, reference_run):
    manifest, baseline = reference_run  # the same samples, uninterrupted, on one process
    ids = [r["id"] for r in baseline[1]]
    out = tmp_path / "run"

    # Attempt 1, 2 processes: rank 1 dies right after saving its second edit, before recording it.
    crash(out, 2, manifest, "edit:1:2", "--edit_batch_size", "1")
    edited_first = {r["id"] for r in records(out, "edit")}
    assert 0 < len(edited_first) < 5 and not records(out, "judge")

    # Attempt 2, 3 processes: makes only the missing edits, then rank 0 dies after scoring its first judge
    # batch, before recording it.
    crash(out, 3, manifest, "judge:0:1", "--edit_batch_size", "1", "--judge_batch_size", "1")
    assert sorted(r["id"] for r in records(out, "edit")) == sorted(ids)  # each edit made (and recorded) once
    judged_before = {r["id"] for r in records(out, "judge")}
    assert len(judged_before) < 5

    # Attempt 3, 1 process (this one): only the missing judgements; no edit is redone, no editor even loaded.
    assert cli.main(["--dataset", str(manifest), "--output_dir", str(out), *TINY_ARGS]) == 0
    resumed = (out, read_results(out / "results.jsonl"), json.loads((out / "report.json").read_text()))
    assert_same_results(baseline, resumed)
    meta, timings = resumed[2]["meta"], resumed[2]["timings"]
    assert meta["attempt"] == 3 and meta["world_size"] == 1
    assert meta["reused_edits"] == 5 and meta["reused_judgements"] == len(judged_before)
    assert timings["edit_samples"] == 0 and timings["load_editor_s"] == 0
    # every row names the attempt that did its work
    assert {r["id"]: r["attempts"]["edit"] for r in resumed[1]} == {i: 1 if i in edited_first else 2 for i in ids}
    assert {r["id"]: r["attempts"]["judge"] for r in resumed[1]} == {i: 2 if i in judged_before else 3 for i in ids}


def test_a_failing_rank_stops_every_rank_instead_of_waiting_for_the_timeout(tmp_path):
    manifest = make_manifest(tmp_path, 4)
    # The healthy rank would wait 600 s at the next barrier; the launch is given 300 s, so a rank that waits
    # for the process-group timeout fails this test (TimeoutExpired) instead of passing slowly.
    result = accelerate_launch(2, ["--dataset", str(manifest), "--output_dir", str(tmp_path / "out"), *TINY_ARGS,
                                   "--process_group_timeout", "600"], timeout=300, check=False,
                               env={"BENCH_TEST_FAIL_LOAD": "1"})
    assert result.returncode == 1
    assert "injected load failure" in result.stdout + result.stderr
