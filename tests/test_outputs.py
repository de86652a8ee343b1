"""The reporting pass (bench_lib.outputs): what a resumed run's report says about its timings."""

import json

from bench_lib import cli
from bench_lib.store import read_run

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
