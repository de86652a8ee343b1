"""Hardening, round two: each test reproduces a defect found by trying to break the harness.

Half-written outputs, two runs on one folder, a full disk in an optional output, user mistakes that used to
end in a traceback, Markdown injection, undecodable reference images, rubric file names, float images.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from launch import ROOT, WORKER, accelerate_launch
from PIL import Image
from test_multiprocess import make_manifest

import bench_lib.cli as cli
import bench_lib.edit_stage as edit_stage
import bench_lib.outputs as outputs
import bench_lib.runner as runner
import run_benchmark
from bench_lib import config_from_dict
from bench_lib.config import ConfigError, DataConfig
from bench_lib.data import load_samples
from bench_lib.judges import Rubrics
from bench_lib.preflight import check_output_dir
from bench_lib.report import build_report, render_markdown, timing_summary
from bench_lib.store import InconsistentRun, read_results, read_run

sys.path.insert(0, str(ROOT / "scripts"))
import compare_runs  # noqa: E402

JUDGE_ONLY = {"editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32",
              "judge_min_digit_mass": 0.0}


def judge_only(tmp_path, name="out", **extra):
    return {**JUDGE_ONLY, "dataset": "data/demo/manifest.jsonl", "output_dir": str(tmp_path / name), "limit": 3,
            **extra}


def temporary_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp"))


# 1 and 2: a kill just before report.json is renamed into place ---------------------------------------


def test_a_kill_mid_report_leaves_a_folder_readers_refuse_and_the_rerun_cleans_up(tmp_path, capsys):
    manifest = make_manifest(tmp_path, 3)
    out = tmp_path / "run"
    args = ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "identity", "--gallery", "false"]
    assert cli.main(args) == 0  # in this process: only the killed run needs one of its own
    assert compare_runs.main([str(out), str(out)]) == 0  # finished and consistent
    capsys.readouterr()

    # Same data, another score formula: results.jsonl is rewritten, then the kill hits before report.json.
    killed = accelerate_launch(1, [*args, "--score_formula", "mean"], timeout=300, check=False,
                               env={"BENCH_TEST_KILL_REPLACE": "0:report.json"})
    assert killed.returncode != 0
    left = temporary_files(out)
    assert [p.name.startswith(".report.json.") for p in left] == [True]  # the complete temporary report

    with pytest.raises(InconsistentRun, match="results.jsonl"):
        read_run(out)
    assert compare_runs.main([str(out), str(out)]) == 2  # new results beside the old report: refused
    assert "different reporting passes" in capsys.readouterr().err

    assert cli.main([*args, "--score_formula", "mean"]) == 0  # the same command again
    assert temporary_files(out) == []
    run = read_run(out)
    assert run["report"]["meta"]["score_formula"] == "mean" and run["report"]["stamp"]["attempt"] == 3
    assert compare_runs.main([str(out), str(out)]) == 0

    # --overwrite removes a temporary file too, wherever the harness writes
    for folder in (out, out / "edits", out / "records", out / "baselines"):
        folder.mkdir(exist_ok=True)
        (folder / ".x.png.abc123.tmp").write_bytes(b"half")
    assert cli.main([*args, "--overwrite"]) == 0
    assert temporary_files(out) == []


def test_every_output_carries_the_same_stamp(tmp_path):
    out = tmp_path / "out"
    runner.run(config_from_dict(judge_only(tmp_path, baselines="blank")))
    run = read_run(out)
    stamp = run["run"]["outputs"]
    assert stamp == run["report"]["stamp"] and stamp["attempt"] == 1 and set(stamp["baselines_sha256"]) == {"blank"}
    line = f"results.jsonl sha256 {stamp['results_sha256']}"
    assert line in (out / "report.md").read_text() and line in (out / "gallery.html").read_text()
    with Image.open(out / "report_chart.png") as chart:
        assert line in chart.info["edit-bench-outputs"]
    # any one output from another pass is named
    (out / "baselines" / "blank.jsonl").write_text("{}\n")
    with pytest.raises(InconsistentRun, match="baselines/blank.jsonl"):
        read_run(out)


# 3: a full disk in an optional output ------------------------------------------------------------------


def test_a_full_disk_in_the_gallery_stops_the_run_and_a_soft_failure_removes_the_stale_file(tmp_path, monkeypatch):
    cfg = config_from_dict(judge_only(tmp_path))
    runner.run(cfg)
    gallery = tmp_path / "out" / "gallery.html"
    assert gallery.is_file()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the gallery")

    monkeypatch.setattr(outputs, "write_gallery", broken)
    runner.run(cfg)  # a view's own bug: the run finishes, and the earlier gallery is not left looking current
    assert not gallery.exists()
    read_run(tmp_path / "out")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "write_gallery", full)
    with pytest.raises(OSError, match="No space left"):
        runner.run(cfg)
    monkeypatch.setattr(outputs, "write_chart", full)
    monkeypatch.setattr(outputs, "write_gallery", broken)
    with pytest.raises(OSError, match="No space left"):
        runner.run(cfg)


# 4: output_dir inside a local dataset folder ------------------------------------------------------------


def test_output_dir_inside_a_local_dataset_folder_is_refused(tmp_path):
    import datasets

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    ds = datasets.Dataset.from_list([{"id": "a", "category": "physics", "instruction": "melt it",
                                      "source_image": str(tmp_path / "a.png")}]).cast_column("source_image",
                                                                                              datasets.Image())
    ds.save_to_disk(str(tmp_path / "data"))
    cfg = config_from_dict({**JUDGE_ONLY, "dataset": str(tmp_path / "data"),
                            "output_dir": str(tmp_path / "data" / "runs" / "one")})
    with pytest.raises(ConfigError, match="inside the dataset folder"):
        runner.run(cfg)
    assert not (tmp_path / "data" / "runs").exists()
    # a manifest is identified by its content: its folder may hold the outputs
    check_output_dir(config_from_dict({**JUDGE_ONLY, "dataset": "data/demo/manifest.jsonl",
                                              "output_dir": "data/demo/out"}))


# 5: a row without a category ---------------------------------------------------------------------------


def test_a_row_without_a_category_neither_makes_a_category_nor_blanks_the_macro_mean():
    rows = [{"id": "a", "category": "physics", "status": "ok", "score": 4.0, "subscores": None},
            {"id": "b", "category": "physics", "status": "ok", "score": 6.0, "subscores": None},
            {"id": "c", "category": "social", "status": "ok", "score": 8.0, "subscores": None},
            {"id": "d", "category": "causal", "status": "edit_failed", "score": None, "subscores": None},
            {"id": "e", "category": "", "status": "invalid_input", "score": None, "subscores": None}]
    for row in rows:
        row["subscores"] = ({k: row["score"] for k in ("instruction", "consistency", "quality")}
                            if row["score"] else None)
    meta = {"dataset": "d", "num_samples": 5, "editor_model": "e", "judge_model": "j", "world_size": 1, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    report = build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1, "switch": 0,
                                                          "judge": 1, "judged": 1}]), meta=meta)
    assert set(report["categories"]) == {"physics", "social", "causal"}
    overall = report["overall"]
    assert overall["failed"] == 2 and overall["count"] == 3  # the row still counts, overall
    assert overall["macro_mean"] == pytest.approx(6.5)  # (5 + 8) / 2: causal has no score to weigh
    assert overall["macro_categories"] == ["physics", "social"]
    assert "|  |" not in render_markdown(report)


# 6: a user's mistake is one line and exit code 2 ---------------------------------------------------------


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


@pytest.mark.parametrize("mistake, message", [
    (latin1_manifest, "not UTF-8"),
    (nested_manifest, "nested too deeply"),
    (output_is_a_file, "is a file"),
    (lambda tmp_path: ["--output_dir", ""], "output_dir"),
    (lambda tmp_path: ["--process_group_timeout", str(10 ** 12)], "process_group_timeout"),
    (lambda tmp_path: ["--editor_kwargs", "num_inference_steps=0"], "num_inference_steps"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, mistake, message):
    loaded = []
    real_load = edit_stage.load_editor
    edit_stage.load_editor = lambda *a, **k: loaded.append(1) or real_load(*a, **k)
    try:
        code = run_benchmark.main(["--output_dir", str(tmp_path / "out"), "--limit", "1", *mistake(tmp_path)])
    finally:
        edit_stage.load_editor = real_load
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert loaded == []  # found before any model loaded
    assert not list((tmp_path / "out").glob("edits/*"))


# 7: two runs on one output_dir -----------------------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_exits_at_once_and_a_killed_run_leaves_no_lock(tmp_path):
    manifest = make_manifest(tmp_path, 2)
    out = tmp_path / "busy"
    args = ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "identity", "--gallery", "false"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "BENCH_EXPECT_WORLD_SIZE": "1",
           "BENCH_TEST_SLOW_EDIT": "30", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, str(WORKER), *args], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("edits/*.png")):  # the first run is editing (and sleeping after its first edit)
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start editing"
            time.sleep(0.5)
        second = accelerate_launch(2, [*args, "--overwrite"], timeout=300, check=False)
        assert second.returncode == 1  # exit code 2 in the workers; accelerate launch reports any failure as 1
        assert f"{out} is in use by another run (host {socket.gethostname()}, pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr.split(f"{out} is in use")[0][-2000:]
        assert first.poll() is None and list(out.glob("edits/*.png"))  # --overwrite deleted nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9: the lock file stays behind, its lock does not
        first.wait()
    assert (out / ".lock").is_file()
    assert cli.main(args) == 0  # the stale lock file does not block the next run
    assert [r["status"] for r in read_results(out / "results.jsonl")] == ["ok"] * 2


# 8: Markdown injection ---------------------------------------------------------------------------------------


def test_markdown_tables_escape_text_from_the_data(tmp_path, capsys):
    nasty = "a|b\nc <b>bold</b> `code`"
    rows = [{"id": f"s{i}", "category": nasty if i % 2 else "plain", "status": "ok", "score": float(i),
             "subscores": {"instruction": 1.0, "consistency": 1.0, "quality": 1.0}} for i in range(4)]
    meta = {"dataset": "data`set", "num_samples": 4, "editor_model": "e|x", "judge_model": "j", "world_size": 1,
            "seed": 0, "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    md = render_markdown(build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1,
                                                                      "switch": 0, "judge": 1, "judged": 1}]),
                                      meta=meta))
    table = [line for line in md.splitlines() if line.startswith("| ") and "| score |" not in line]
    first = table[:3]  # the two categories and overall
    assert [line.count(" | ") for line in first] == [10, 10, 10]  # every row keeps its 11 cells
    assert "<b>" not in md and "&lt;b&gt;" in md and "a\\|b c" in md and "\\`code\\`" in md

    def run(folder):
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"fingerprint": {}, "attempts": 1}))
        return {"folder": folder, "fingerprint": {}, "rows": rows, "meta": {"score_formula": "viescore"}}

    text = compare_runs.render(compare_runs.compare(run(tmp_path / "a"), run(tmp_path / "b")))
    assert "<b>" not in text and "a\\|b c &lt;b&gt;" in text
    assert all(line.count(" | ") == 6 for line in text.splitlines() if line.startswith("| ") and "---" not in line)


# 9: an undecodable reference image -----------------------------------------------------------------------------


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
        runner.run(config_from_dict({**JUDGE_ONLY, "dataset": str(tmp_path / "m.jsonl"),
                                     "output_dir": str(tmp_path / "out")}))
    finally:
        edit_stage.load_editor = real
    results = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}
    assert results["bad_ref"]["status"] == "invalid_input" and "reference image" in results["bad_ref"]["error"]
    assert results["bad_ref"]["edited_image"] is None and results["good"]["status"] == "ok"
    assert len(edited) == 1  # only the good sample was edited


# 10: rubric file names -----------------------------------------------------------------------------------------


def test_rubric_files_match_categories_case_insensitively(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "Default.txt").write_text("default {instruction}")
    (prompts / "Physics.txt").write_text("physics {instruction}")
    rubrics = Rubrics(prompts)
    assert rubrics.rubric_name("physics") == "physics" and rubrics.rubric_name("PHYSICS") == "physics"
    assert rubrics.rubric_name("social") == "default"
    config_from_dict({**JUDGE_ONLY, "dataset": "x.jsonl", "prompts_dir": str(prompts)})  # Default.txt counts
    (prompts / "physics.txt").write_text("another")
    with pytest.raises(ConfigError, match="differ only by case"):
        Rubrics(prompts)


# Also: float images ----------------------------------------------------------------------------------------------


def test_float_images_are_read_by_their_range_or_refused(tmp_path):
    Image.fromarray(np.full((16, 16), 0.8, dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    Image.fromarray(np.full((16, 16), 200.0, dtype=np.float32), mode="F").save(tmp_path / "big.tiff")
    rows = [{"id": name, "category": "c", "instruction": "x", "source_image": f"{name}.tiff"} for name in ("f", "big")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl")))
    assert samples[0].source_image.load().getpixel((0, 0)) == (204, 204, 204)  # 0.8 of white, not black
    with pytest.raises(ValueError, match="only 0..1 float images"):
        samples[1].source_image.load()
