"""scripts/train_lora_example.py, the Python API inside a training loop, on two CPU processes: two evaluations
inside the loop with the judge loaded once per process, the adapter trained exactly as without evaluating, the
evaluation's numbers those of a command-line run on the saved checkpoint, and the metrics in the script's own
TensorBoard run at the evaluation steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launch import ROOT, accelerate_launch

SCRIPT = ROOT / "scripts" / "train_lora_example.py"
EDITOR_KWARGS = {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 4.0}
# limit 2, one judgement per batch: each of the two processes edits and judges one sample per evaluation
EVAL = {"limit": 2, "baselines": "", "gallery": False, "judge_batch_size": 1, "editor_kwargs": EDITOR_KWARGS}
TRAIN = ["--steps", "4", "--eval_every", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    accelerate_launch(2, ["--output_dir", str(folder / "eval-on"), *TRAIN, "--eval_overrides", json.dumps(EVAL)],
                      script=SCRIPT, timeout=900)
    accelerate_launch(2, ["--output_dir", str(folder / "eval-off"), *TRAIN, "--no_eval", "--log_with", "none"],
                      script=SCRIPT, timeout=600)
    # The command line on the last checkpoint, one process, the same benchmark settings (and, as in the launched
    # processes, one thread: a CPU matmul's summation order depends on the number of threads).
    cli = folder / "cli"
    subprocess.run([sys.executable, "run_benchmark.py", "--config", "configs/smoke.yaml",
                    "--lora", str(folder / "eval-on" / "checkpoint-4"), "--output_dir", str(cli), "--limit", "2",
                    "--baselines", "", "--gallery", "false", "--judge_batch_size", "1",
                    "--editor_kwargs", "negative_prompt=null,height=32,width=32"],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return folder


def summaries(folder: Path) -> list[dict]:
    return [json.loads((folder / f"summary-rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_evaluations_on_two_processes_with_the_judge_loaded_once(runs):
    for rank, summary in enumerate(summaries(runs / "eval-on")):
        assert (summary["world_size"], summary["rank"]) == (2, rank)  # as each worker saw it
        assert [e["step"] for e in summary["evaluations"]] == [2, 4]
        assert [e["judge_loads"] for e in summary["evaluations"]] == [1, 0]  # loaded at the first, then kept
    for step in (2, 4):
        report = json.loads((runs / "eval-on" / "eval" / f"checkpoint-{step}" / "report.json").read_text())
        assert report["overall"]["count"] == 2 and report["meta"]["world_size"] == 2


def test_evaluating_does_not_change_the_training(runs):
    from safetensors.torch import load_file

    for step in (2, 4):
        on = load_file(runs / "eval-on" / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")
        off = load_file(runs / "eval-off" / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")
        assert on.keys() == off.keys() and len(on) > 0
        assert all((on[k] == off[k]).all() for k in on), f"checkpoint-{step} differs"
    first = load_file(runs / "eval-on" / "checkpoint-2" / "pytorch_lora_weights.safetensors")
    last = load_file(runs / "eval-on" / "checkpoint-4" / "pytorch_lora_weights.safetensors")
    assert any(not (first[k] == last[k]).all() for k in first)  # it did train


def test_the_evaluation_equals_the_command_line_on_the_checkpoint(runs):
    inside = runs / "eval-on" / "eval" / "checkpoint-4"
    cli = runs / "cli"
    rows = [[json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
            for folder in (inside, cli)]
    assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]
    for a, b in zip(*rows):
        assert a["status"] == b["status"] == "ok"
        assert a["metrics"] == b["metrics"]  # bitwise
        assert (inside / a["edited_image"]).read_bytes() == (cli / b["edited_image"]).read_bytes()
    reports = [json.loads((folder / "report.json").read_text()) for folder in (inside, cli)]
    assert reports[0]["overall"]["metrics"] == reports[1]["overall"]["metrics"]
    editor = [json.loads((folder / "run.json").read_text())["fingerprint"]["editor"]["diffusers"]
              for folder in (inside, cli)]
    assert editor[0]["editor_kwargs"] == editor[1]["editor_kwargs"]  # the same benchmark settings


def test_the_scores_are_in_the_training_scripts_tensorboard_run(runs):
    from test_trackers import event_scalars

    scalars = event_scalars(runs / "eval-on" / "logs")
    assert set(scalars["train/loss"]) == {1, 2, 3, 4}
    assert set(scalars["eval/score"]) == {2, 4}
    report = json.loads((runs / "eval-on" / "eval" / "checkpoint-4" / "report.json").read_text())
    assert scalars["eval/score"][4] == pytest.approx(report["overall"]["metrics"]["score"]["mean"])
