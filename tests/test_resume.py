"""Crash-safe, resumable runs: kill -9 a rank mid-stage, rerun the same command, get the same results."""

import json

from launch import TINY_ARGS, accelerate_launch
from test_multiprocess import assert_same_results, make_manifest, run


def crash(tmp_path, name, num_processes, manifest, kill, *extra):
    result = accelerate_launch(num_processes, ["--dataset", str(manifest), "--output_dir", str(tmp_path / name),
                                               *TINY_ARGS, *extra], timeout=300, check=False,
                               env={"BENCH_TEST_KILL": kill})
    assert result.returncode != 0
    assert not (tmp_path / name / "results.jsonl").exists()


def records(out, stage):
    return [json.loads(line) for p in sorted((out / "records").glob(f"*.{stage}.*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def test_kill_in_each_stage_then_resume_with_another_process_count(tmp_path):
    manifest = make_manifest(tmp_path, 5)
    baseline = run(tmp_path, "baseline", 1, manifest, "--edit_batch_size", "1")

    # Stage 1: rank 1 dies right after saving its second edit, before recording it.
    crash(tmp_path, "edit_crash", 2, manifest, "edit:1:2", "--edit_batch_size", "1")
    recorded = {r["id"] for r in records(tmp_path / "edit_crash", "edit")}
    assert 0 < len(recorded) < 5
    resumed = run(tmp_path, "edit_crash", 3, manifest, "--edit_batch_size", "1")
    assert_same_results(baseline, resumed)
    meta = resumed[2]["meta"]
    assert meta["attempt"] == 2 and meta["reused_edits"] == len(recorded) and meta["world_size"] == 3

    # Stage 2: rank 0 dies after scoring its first judge batch, before recording it.
    crash(tmp_path, "judge_crash", 2, manifest, "judge:0:1", "--judge_batch_size", "1")
    assert len(records(tmp_path / "judge_crash", "edit")) == 5
    judged_before = {r["id"] for r in records(tmp_path / "judge_crash", "judge")}
    resumed = run(tmp_path, "judge_crash", 1, manifest)
    assert_same_results(baseline, resumed)
    meta = resumed[2]["meta"]
    assert meta["reused_edits"] == 5 and meta["reused_judgements"] == len(judged_before) < 5
    assert resumed[2]["timings"]["edit_samples"] == 0  # no edit was redone: no editor was even loaded
    assert resumed[2]["timings"]["load_editor_s"] == 0


def test_a_failing_rank_stops_every_rank_instead_of_waiting_for_the_timeout(tmp_path):
    manifest = make_manifest(tmp_path, 4)
    # The healthy rank would wait 600 s at the next barrier; the launch is given 300 s, so a rank that waits
    # for the process-group timeout fails this test (TimeoutExpired) instead of passing slowly.
    result = accelerate_launch(2, ["--dataset", str(manifest), "--output_dir", str(tmp_path / "out"), *TINY_ARGS,
                                   "--process_group_timeout", "600"], timeout=300, check=False,
                               env={"BENCH_TEST_FAIL_LOAD": "1"})
    assert result.returncode == 1
    assert "injected load failure" in result.stdout + result.stderr
