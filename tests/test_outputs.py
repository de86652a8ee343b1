"""The reporting pass (bench_lib.outputs): what a resumed run's report says about its timings."""

import errno
import json

import pytest
from conftest import IDENTITY_RUN
from PIL import Image

import bench_lib.outputs as outputs
import bench_lib.runner as runner
from bench_lib import cli, config_from_dict
from bench_lib.store import InconsistentRun, read_run

JUDGE_ONLY = ["--editor", "identity", "--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32",
              "--judge_min_digit_mass", "0", "--dataset", "data/demo/manifest.jsonl", "--limit", "1",
              "--gallery", "false", "--baselines", "blank"]


def test_a_resume_with_nothing_to_do_keeps_the_timings_of_the_attempt_that_did_the_work(tmp_path):
    out = tmp_path / "out"
    args = [*JUDGE_ONLY, "--output_dir", str(out)]
    assert cli.main(args) == 0
    first = json.loads((out / "report.json").read_text())["timings"]
    assert first["edit_samples"] == 1 and first["judge_samples"] == 2  # the editor's edit and the blank baseline

    assert cli.main([*args, "--score_formula", "mean"]) == 0  # re-scored: nothing edited or judged
    run = read_run(out)
    assert run["report"]["meta"]["attempt"] == 2 and run["report"]["meta"]["reused_judgements"] == 1
    assert run["report"]["timings"] == first  # not the empty attempt's zeros
    assert first["attempt"] == 1
    md = (out / "report.md").read_text()
    assert "Timings of attempt 1, the last that edited or judged anything (attempt 2 reused" in md
    assert "| 1 |" in md.split("| edit | ")[1].splitlines()[0]  # the edit stage's sample count

    assert cli.main([*args, "--limit", "2"]) == 0  # one more sample: this attempt's own timings
    timings = json.loads((out / "report.json").read_text())["timings"]
    assert timings["attempt"] == 3 and timings["edit_samples"] == 1 and timings["judge_samples"] == 2
    assert "Timings of attempt 3." in (out / "report.md").read_text()
    assert [h.get("timings", {}).get("attempt") for h in run["run"]["history"]] == [1, None]


def judge_only(tmp_path, name="out", **extra):
    return {**IDENTITY_RUN, "dataset": "data/demo/manifest.jsonl", "output_dir": str(tmp_path / name), "limit": 3,
            **extra}


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
