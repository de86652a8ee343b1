"""scripts/compare_runs.py on synthetic runs with a planted difference, with none, and not comparable."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import compare_runs  # noqa: E402

from bench_lib.store import jsonl_text, sha256_text  # noqa: E402

FINGERPRINT = {"data": {"dataset_content": "sha256:abc", "dataset_split": "train", "columns": {}}, "scoring": 3,
               "rubrics": {"default": "r1", "physics": "r2"},
               "judge": {"judge": "qwen_vl", "judge_mode": "logits", "qwen_vl": {"judge_model": "j"}}}


def make_run(folder: Path, scores: dict[str, float], *, fingerprint=None, failed=(), formula="viescore",
             config=None):
    folder.mkdir(parents=True)
    rows = [{"id": i, "category": "physics" if n % 2 else "social",
             "status": "judge_failed" if i in failed else "ok", "score": None if i in failed else s}
            for n, (i, s) in enumerate(scores.items())]
    results = jsonl_text(rows)
    stamp = {"attempt": 1, "results_sha256": sha256_text(results), "baselines_sha256": {}}
    (folder / "results.jsonl").write_text(results)
    (folder / "report.json").write_text(json.dumps({"meta": {"score_formula": formula, "score_weights": None,
                                                             **({"config": config} if config else {})},
                                                    "stamp": stamp}))
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint or FINGERPRINT, "attempts": 1,
                                                 "outputs": stamp}))
    return folder


def scores(rng, n=80, shift=0.0, noise=0.5, base=None):
    base = rng.uniform(2, 8, size=n) if base is None else base
    return base, {f"s{i}": float(v + shift + rng.normal(0, noise)) for i, v in enumerate(base)}


def test_planted_difference_is_found_and_its_absence_is_not(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base, a = scores(rng, noise=0.0)
    _, planted = scores(rng, shift=0.6, base=base)
    _, unchanged = scores(rng, base=base)
    run_a = make_run(tmp_path / "a", a, failed={"s3"})
    assert compare_runs.main([str(run_a), str(make_run(tmp_path / "b", planted)),
                              "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["scored"] == {"a": 79, "b": 80, "both": 79}  # s3 failed in A: not a pair
    overall = result["overall"]
    assert overall["n"] == 79 and overall["difference"] == pytest.approx(0.6, abs=0.15)
    assert overall["ci"][0] > 0 and overall["p_value"] < 0.001
    for category in ("physics", "social"):
        assert result["categories"][category]["ci"][0] > 0
    # The method label says how each p-value was computed: exact for few pairs, Monte Carlo for many.
    methods = {result["overall"]["p_value_method"], *(c["p_value_method"] for c in result["categories"].values())}
    assert result["overall"]["p_value_method"] == "monte carlo" and methods <= {"exact", "monte carlo"}
    assert "exact" in result["method"]["p_value"] and "Monte Carlo" in result["method"]["p_value"]
    assert "p_value_method" in result["method"]["p_value"]
    table = capsys.readouterr().out
    assert "| category | n | mean A | mean B | B - A | 95% CI | p |" in table and "| **overall** | 79 |" in table

    none = compare_runs.compare(compare_runs.load_run(run_a),
                                compare_runs.load_run(make_run(tmp_path / "c", unchanged)))
    assert none["overall"]["ci"][0] < 0 < none["overall"]["ci"][1] and none["overall"]["p_value"] > 0.05


@pytest.mark.parametrize("change, message", [
    ({"data": {**FINGERPRINT["data"], "dataset_content": "sha256:other"}}, "data"),
    ({"rubrics": {"default": "r1", "physics": "edited"}}, "rubrics"),
    ({"data": {**FINGERPRINT["data"], "columns": {"id": "index"}}}, "data"),
])
def test_runs_on_other_data_or_rubrics_are_refused(tmp_path, capsys, change, message):
    data = {"s0": 1.0, "s1": 2.0}
    run_a = make_run(tmp_path / "a", data)
    run_b = make_run(tmp_path / "b", data, fingerprint={**FINGERPRINT, **change})
    assert compare_runs.main([str(run_a), str(run_b)]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and message in err


def test_other_score_formula_is_refused_and_another_judge_is_a_warning(tmp_path, capsys):
    data = {f"s{i}": float(i) for i in range(6)}
    run_a = make_run(tmp_path / "a", data)
    assert compare_runs.main([str(run_a), str(make_run(tmp_path / "b", data, formula="mean"))]) == 2
    assert "score_formula" in capsys.readouterr().err
    other_judge = make_run(tmp_path / "c", data, fingerprint={**FINGERPRINT, "judge": {
        **FINGERPRINT["judge"], "qwen_vl": {"judge_model": "k"}}})
    assert compare_runs.main([str(run_a), str(other_judge)]) == 0
    assert "Warning: judge.qwen_vl.judge_model differs: 'j' (A) vs 'k' (B)" in capsys.readouterr().out
    assert compare_runs.main([str(run_a), str(tmp_path / "missing")]) == 2
    assert "not a finished run" in capsys.readouterr().err


def test_runs_counted_under_another_failure_policy_are_refused(tmp_path, capsys):
    """failure_policy is applied when rows are written, so it is in no fingerprint: under `reference` an unparsed
    answer is a filled-in score, under `strict` no score at all. Their difference is the policy's, not the editors'."""
    data = {f"s{i}": float(i) for i in range(6)}
    strict = make_run(tmp_path / "a", data, config={"failure_policy": "strict"})
    reference = make_run(tmp_path / "b", data, config={"failure_policy": "reference"})
    assert compare_runs.main([str(strict), str(reference)]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "failure_policy (strict vs reference)" in err
    assert compare_runs.main([str(reference), str(make_run(tmp_path / "c", data,
                                                           config={"failure_policy": "reference"}))]) == 0
    assert compare_runs.main([str(strict), str(make_run(tmp_path / "d", data))]) == 0  # a run without the key: strict


def test_every_option_has_help(capsys):
    with pytest.raises(SystemExit):
        compare_runs.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--metric", "--json", "--resamples", "--seed"):
        line = text.split(option, 1)[1].split("\n  -", 1)[0]
        assert len(line.split()) > 3, (option, line)  # more than the metavar: a sentence of help


@pytest.mark.parametrize("option, value, message", [
    ("--resamples", "0", "resamples must be a positive whole number, got 0"),
    ("--resamples", "-5", "resamples must be a positive whole number, got -5"),
    ("--json", "{tmp}/no-such-folder/r.json", "no-such-folder"),
    ("--json", "{tmp}", "is a folder"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, capsys, option, value, message):
    data = {f"s{i}": float(i) for i in range(6)}
    run_a, run_b = make_run(tmp_path / "a", data), make_run(tmp_path / "b", data)
    assert compare_runs.main([str(run_a), str(run_b), option, value.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert not (tmp_path / "no-such-folder").exists()  # refused, not created


def test_score_is_the_primary_metric_on_the_scale_its_report_declares():
    """RE-Edit's primary metric is the yes-rate, reported in %: `score` (the default) compares it in %, as the
    report shows it, not as the 0-1 per-sample value."""
    from bench_lib.compare import compare

    declared = {"name": "re_edit", "primary": "yes_rate",
                "metrics": {"yes_rate": {"range": [0, 1], "reported_as": [0.0, 100.0]},
                            "instruction_following": {"range": [0, 10], "reported_as": None}}}

    def run(folder: str, yes: list[float]) -> dict:
        rows = [{"id": f"s{i}", "category": "causal", "status": "ok", "score": v,
                 "metrics": {"yes_rate": v, "instruction_following": 10 * v}} for i, v in enumerate(yes)]
        return {"folder": Path(folder), "fingerprint": FINGERPRINT, "rows": rows, "meta": {}, "protocol": declared}

    a, b = run("a", [0.0, 0.5, 0.5, 1.0]), run("b", [0.5, 1.0, 0.5, 1.0])
    result = compare(a, b)
    assert result["metric"] == "yes_rate" and compare(a, b, metric="score")["overall"] == result["overall"]
    assert result["overall"]["mean_a"] == pytest.approx(50.0) and result["overall"]["difference"] == pytest.approx(25.0)
    assert compare(a, b, metric="instruction_following")["overall"]["difference"] == pytest.approx(2.5)
