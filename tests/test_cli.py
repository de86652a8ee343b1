"""Exit codes of the entry script: 2 for a bad config or dataset, found before any model loads."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from conftest import assert_one_line, probe
from launch import ROOT

import bench_lib.edit_stage as edit_stage
import run_benchmark


def run_cli(*args):
    return subprocess.run([sys.executable, "run_benchmark.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("writable_lock", [False, True])
def test_a_read_only_output_folder_is_exit_1_with_one_line(tmp_path, capsys, monkeypatch, writable_lock):
    """A folder on a read-only filesystem (or not writable by the user): exit code 1 and one line, no traceback,
    whether the lock file already fails or only the first output does."""
    from bench_lib import cli

    out = tmp_path / "out"
    out.mkdir()
    if writable_lock:
        (out / ".lock").write_text("")
    real_open = os.open

    def read_only_open(path, flags, *args, dir_fd=None, **kwargs):
        where = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path if dir_fd is not None else Path(path)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and where.absolute().is_relative_to(out) \
                and not (writable_lock and where.name == ".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(where))
        return real_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    code = cli.main(["--editor", "identity", "--judge_model", "tiny:qwen3-vl", "--dataset", "data/demo/manifest.jsonl",
                     "--limit", "1", "--output_dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: Read-only file system: "), err
    assert str(out) in err[0]


def test_a_run_that_scores_nothing_writes_its_reports_and_exits_1_in_one_line(tmp_path, capsys, caplog):
    """The random tiny judge in generate mode writes noise: every answer fails to parse, is asked again, fails again,
    and becomes judge_failed with both raw answers kept; nothing enters a mean. Unparsed answers never stop a run
    early: it finishes, writes every report, then says in one line that nothing was scored (exit code 1)."""
    from bench_lib import cli
    from bench_lib.store import read_results

    out = tmp_path / "out"
    code = cli.main(["--limit", "3", "--editor", "blank", "--baselines", "identity", "--judge_mode", "generate",
                     "--judge_max_new_tokens", "8", "--judge_batch_size", "2", "--output_dir", str(out)])
    err = capsys.readouterr().err + caplog.text
    assert code == 1, err[-4000:]
    assert err.count("nothing was scored: none of the 3 samples is ok (3 judge_failed)") == 1, err[-4000:]
    assert "Traceback" not in err and "stopped early" not in err
    rows = read_results(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["physics_01", "physics_02", "environment_01"]  # dataset order
    for r in rows:
        assert r["status"] == "judge_failed" and r["score"] is None and r["subscores"] is None
        assert r["judge_parse"] == "failed" and len(r["judge_raw"]) == 2 and all(r["judge_raw"])
        assert "did not parse twice" in r["error"] and r["digit_mass"] is None
        assert len(r["rubric_sha256"]) == 64
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["mean"] is None and report["overall"]["parse_failure_rate"] == 1.0
    assert report["categories"]["physics"]["parse_failed"] == 2
    # count 0, failed 3, flagged 3 (the blank editor's edits are flagged), unparsed 100%
    assert "| **overall** | – | – | – | – | – | – | 0 | 3 | 3 | 100% |" in (out / "report.md").read_text()
    for name in ("results.jsonl", "report.json", "report.md", "baselines/identity.jsonl"):
        assert (out / name).is_file(), name


def test_several_cpu_processes_without_accelerate_use_cpu_is_one_line_per_process(tmp_path):
    """Without ACCELERATE_USE_CPU every CPU process believes it is alone: each says so in one line (no
    traceback of ours), before anything is written to the output folder."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("ACCELERATE_USE_CPU", "ACCELERATE_CONFIG_FILE")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_configs" /
           "cpu.yaml"), "--num_processes", "2", "--main_process_port", "0", "run_benchmark.py", "--limit", "1",
           "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("error: the launcher started 2 processes but this one sees a world of 1: on a machine "
                        "without GPUs set ACCELERATE_USE_CPU=1") == 2, output[-6000:]
    assert "bench_lib/" not in output  # no frame of ours: no traceback
    assert not (tmp_path / "out" / "run.json").exists()


# --- a user's mistake: one line and exit code 2, before any model loads ----------------------------


def nested_manifest(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return ["--dataset", str(path)]


def latin1_manifest(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a", "category": "physique", "instruction": "fais fondre la glace à 30°", '
                     '"source_image": "a.png"}\n'.encode("latin-1"))
    return ["--dataset", str(path)]


def output_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return ["--output_dir", str(tmp_path / "file")]


def dataset_without_source_image(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "category": "physics", "instruction": "x", "image": "a.png"}\n')
    return ["--dataset", str(tmp_path / "m.jsonl")]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Adapter files that must be refused: one for another model, one that is not a LoRA, and pickles."""
    from safetensors.torch import load_file, save_file

    from bench_lib.demo.tiny import build_lora

    folder = tmp_path_factory.mktemp("adapters")
    build_lora(folder / "kontext-adapter", seed=1, base="flux-kontext")
    (folder / "not-a-lora").mkdir()
    save_file({"transformer.proj_out.weight": torch.zeros(2, 2)}, folder / "not-a-lora" / "w.safetensors")
    # a pickle (`.bin`) adapter could run code when unpickled: refused as a file, as the only weights of a folder,
    # or named by lora_weight_name beside a safetensors file
    state_dict = load_file(build_lora(folder / "good", seed=1))
    (folder / "pickled").mkdir()
    torch.save(state_dict, folder / "pickled" / "pytorch_lora_weights.bin")
    (folder / "good" / "pytorch_lora_weights.bin").write_bytes((folder / "pickled" / "pytorch_lora_weights.bin")
                                                               .read_bytes())
    return folder


# Each mistake: the arguments it adds (from a temporary folder and the adapters' folder), and what the one line
# must say.
MISTAKES = [
    (lambda tmp, lora: dataset_without_source_image(tmp), ["source_image", "--columns"]),
    (lambda tmp, lora: latin1_manifest(tmp), ["not UTF-8"]),
    (lambda tmp, lora: nested_manifest(tmp), ["nested too deeply"]),
    (lambda tmp, lora: output_is_a_file(tmp), ["is a file"]),
    (lambda tmp, lora: ["--output_dir", ""], ["output_dir"]),
    (lambda tmp, lora: ["--process_group_timeout", str(10 ** 12)], ["process_group_timeout"]),
    (lambda tmp, lora: ["--editor_kwargs", "num_inference_steps=0"], ["num_inference_steps"]),
    (lambda tmp, lora: ["--editor_kwargs", "num_inference_step=2"], ["num_inference_step", "num_inference_steps"]),
    (lambda tmp, lora: ["--config", "configs/smoke.yaml", "--judge_model", str(tmp / "no-such-judge")],
     ["no-such-judge"]),
    (lambda tmp, lora: ["--lora", str(tmp / "nothing-here")], ["no such file or folder"]),
    (lambda tmp, lora: ["--lora", str(lora / "kontext-adapter")], ["does not fit"]),
    (lambda tmp, lora: ["--lora", str(lora / "not-a-lora")], ["not a LoRA adapter"]),
    (lambda tmp, lora: ["--lora", str(lora / "pickled" / "pytorch_lora_weights.bin")], ["safetensors", "pickle"]),
    (lambda tmp, lora: ["--lora", str(lora / "pickled")], ["safetensors", "pickle"]),
    (lambda tmp, lora: ["--lora", str(lora / "good"), "--lora_weight_name", "pytorch_lora_weights.bin"],
     ["safetensors", "pickle"]),
]


@pytest.mark.parametrize("mistake, fragments", MISTAKES)
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, adapters, mistake, fragments):
    """The entry script's exit code 2: one line that says what is wrong, found before any model loads and
    before anything is edited."""
    loaded = []
    real_load = edit_stage.load_editor
    monkeypatch.setattr(edit_stage, "load_editor", lambda *a, **k: loaded.append(1) or real_load(*a, **k))
    out = tmp_path / "out"
    code = run_benchmark.main(["--output_dir", str(out), "--limit", "1", *mistake(tmp_path, adapters)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(fragment in err[0] for fragment in fragments), err
    assert loaded == []  # found before any model loaded
    assert not list(out.glob("edits/*")) and not (out / "results.jsonl").exists()


# --- a newcomer's first commands ------------------------------------------------------------------


def test_help_answers_without_any_model_library_and_shows_what_a_plain_run_uses():
    result, imported, _ = probe("--help")
    assert result.returncode == 0 and imported == []
    help_text = result.stdout
    # kebab-case aliases, choices, metavars, and the recipe's values (not the dataclass defaults)
    assert "--output_dir PATH, --output-dir PATH" in help_text
    assert "{logits,generate}" in help_text and "--judge_batch_size N" in help_text
    assert str(ROOT / "outputs" / "smoke") in help_text and "outputs/run" not in help_text
    assert "[editor]:" in help_text and "[judge:qwen_vl]:" in help_text


@pytest.mark.parametrize("args, fragments", [
    (["--limit", "abc"], ["limit", "abc"]),
    (["--ouput_dir", "x"], ["--ouput_dir", "did you mean", "--output_dir"]),
    (["--edit_batchsize", "2"], ["edit_batchsize"]),
    (["--judge_mode", "sample"], ["judge_mode", "logits", "generate"]),
])
def test_config_errors_are_one_line_before_any_import(args, fragments):
    result, imported, errors = probe(*args)
    assert_one_line(result, errors, *fragments)
    assert imported == []


def test_installable_with_an_entry_point_and_runnable_from_anywhere(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import pkgutil

    from bench_lib.cli import main

    (entry,) = project["scripts"].items()
    assert entry[0] == "edit-bench" and pkgutil.resolve_name(entry[1]) is main
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    test_only = {r for r in requirements if r.startswith(("pytest", "ruff", "transformers[serving]"))}
    runtime = {r for r in requirements if r and r not in test_only}
    assert set(project["dependencies"]) == runtime and set(project["optional-dependencies"]["test"]) == test_only
    # `python -m bench_lib` with the offline default recipe (its judge; the identity editor, as diffusion is not
    # what is tested here), from a folder that is not the checkout.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bench_lib", "--limit", "2", "--baselines", "", "--editor",
                             "identity", "--output_dir", "here"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "here" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]

