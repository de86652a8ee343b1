"""The judge stage's early stop: a judge that raises on every sample stops the run at one barrier, its records
kept; a judge whose answers never parse does not (the run finishes, then fails for scoring nothing)."""

import json
from pathlib import Path

import pytest
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import JUDGES, Judge, register_judge
from bench_lib.failures import RunFailed
from bench_lib.judging import Reading, ScaleReader
from bench_lib.store import read_run


class ScriptedJudge(Judge):
    """A test double registered through the real registry: reads 5 (the middle of a 0-10 scale) with certainty
    for every question (`mode` "answer"), raises ConnectionError like a judge server that is down ("raise"), or
    puts no probability on the scale at all ("unparsed": off-format, asked again, then judge_failed). `answered`:
    instructions whose sample is answered whatever the mode, when it is judged alone."""

    mode = "answer"
    calls = 0
    answered: set = set()

    def read_scales(self, requests):
        type(self).calls += 1
        alone = len(requests) == 1 and any(requests[0].content[-1].text.find(f"Instruction: {a}\n") >= 0
                                           for a in self.answered)
        if self.mode == "raise" and not alone:
            raise ConnectionError("the judge server refused the connection")
        mass = 0.0 if self.mode == "unparsed" and not alone else 1.0

        class Reader(ScaleReader):
            def read(self, prompt, rows):
                return [Reading(5.0, [float(v == 5) for v in prompt.scale.values], mass, instead=lambda: "'maybe'")
                        for _ in requests]

        return Reader()

    def generate(self, prompts):
        raise AssertionError("these tests judge in logits mode")


def register_backends() -> None:
    register_judge("test-scripted")(ScriptedJudge)


@pytest.fixture
def scripted_judge():
    register_backends()
    ScriptedJudge.mode, ScriptedJudge.calls, ScriptedJudge.answered = "answer", 0, set()
    yield ScriptedJudge
    JUDGES.pop("test-scripted")
    ScriptedJudge.mode = "answer"


def write_manifest(folder: Path, rows: int, *, missing=()) -> Path:
    """`rows` samples sharing one small image; the indices in `missing` point at a file that does not exist
    (invalid_input)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), "red").save(folder / "a.png")
    lines = [{"id": f"s{i:02d}", "category": "physics", "instruction": f"change {i}",
              "source_image": "nope.png" if i in missing else "a.png"} for i in range(rows)]
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def records(out: Path, kind: str) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "records").glob(f"*.{kind}.*"))
            for line in path.read_text().splitlines()]


def test_a_judge_that_raises_on_every_sample_stops_the_run_and_a_rerun_resumes(scripted_judge, tmp_path):
    out = tmp_path / "out"
    cfg = {"dataset": str(write_manifest(tmp_path / "data", 11)), "output_dir": str(out), "editor": "identity",
           "judge": "test-scripted", "baselines": "", "judge_batch_size": 2}
    scripted_judge.mode = "raise"
    with pytest.raises(RunFailed, match=r"stopped early: the first 8 samples judged all failed with "
                                        r"ConnectionError \(the first, 's\d\d': ConnectionError: the judge server"):
        runner.run(config_from_dict(cfg))
    judged = records(out, "judge")
    # 1 process, batches of 2: the 8 samples of the first 4 batches decide; the 3 samples left are not asked
    assert len(judged) == 8 and all(r["status"] == "judge_failed" for r in judged)
    assert not (out / "results.jsonl").exists() and not (out / "report.json").exists()
    assert len(records(out, "edit")) == 11  # the edits are kept too

    scripted_judge.mode = "answer"  # the server is back: the same command resumes
    runner.run(config_from_dict(cfg))
    run = read_run(out)
    assert [r["status"] for r in run["rows"]] == ["ok"] * 11
    assert run["report"]["meta"]["attempt"] == 2 and run["report"]["meta"]["reused_edits"] == 11


def test_unparsed_answers_never_stop_early_and_invalid_inputs_do_not_count(scripted_judge, tmp_path):
    out = tmp_path / "out"
    cfg = {"dataset": str(write_manifest(tmp_path / "data", 10, missing={0, 1})), "output_dir": str(out),
           "editor": "identity", "judge": "test-scripted", "baselines": "identity", "judge_batch_size": 3}
    scripted_judge.mode = "unparsed"
    with pytest.raises(RunFailed, match=r"nothing was scored: none of the 10 samples is ok \(2 invalid_input, "
                                        r"8 judge_failed\); the reports are written"):
        runner.run(config_from_dict(cfg))
    run = read_run(out)  # the whole report set, consistent
    assert [r["status"] for r in run["rows"]] == ["invalid_input"] * 2 + ["judge_failed"] * 8
    assert len(records(out, "judge")) == 8 and len(records(out, "baseline-identity")) == 8  # every one was asked


@pytest.mark.parametrize("answered, stops", [("s05", False), ("s09", True)])
def test_the_first_8_samples_of_the_plan_decide(scripted_judge, tmp_path, monkeypatch, answered, stops):
    """The judge raises for every sample but one: the run stops only when that one is not among the first 8 of
    the judge plan (equal lengths here, so the plan is dataset order: batches s00-s03, s04-s07, s08-s11)."""
    out = tmp_path / "out"
    cfg = {"dataset": str(write_manifest(tmp_path / "data", 12)), "output_dir": str(out), "editor": "identity",
           "judge": "test-scripted", "baselines": "", "judge_batch_size": 4}
    scripted_judge.mode = "raise"
    monkeypatch.setattr(ScriptedJudge, "answered", {f"change {int(answered[1:])}"})  # answered when alone
    if stops:
        with pytest.raises(RunFailed, match="the first 8 samples judged all failed with ConnectionError"):
            runner.run(config_from_dict(cfg))
        assert [r["id"] for r in records(out, "judge")] == [f"s{i:02d}" for i in range(8)]
        return
    runner.run(config_from_dict(cfg))
    statuses = {r["id"]: r["status"] for r in read_run(out)["rows"]}
    assert statuses.pop(answered) == "ok" and set(statuses.values()) == {"judge_failed"} and len(statuses) == 11
