"""failure_policy (bench_lib.results.build_row): strict leaves an unparsed judgement judge_failed and unscored;
reference counts it as the benchmark's own code does, and every filled, guessed, dropped or zeroed value is
counted. Only a parse failure is a benchmark's to count: a judge that raised or gave NaN logits stays failed."""

import random
from types import SimpleNamespace

import pytest

from bench_lib.data import Sample
from bench_lib.protocols import PROTOCOLS
from bench_lib.results import build_row

CFG = SimpleNamespace(judge_prompts="", judge_mode="generate", judge_max_pixels=None)


def row(protocol_name: str, category: str, partial: dict, *, policy: str, parse: str = "failed", seed: int = 7):
    protocol = PROTOCOLS.get(protocol_name)(CFG)
    sample = Sample(index=0, id="s", category=category, instruction="do it", source_image=None,
                    reference_text="the answer")
    facts = protocol.facts(sample, {})
    judgement = {"id": "s", "status": "judge_failed", "error": "the judge's answer did not parse twice",
                 "answers": None, "distributions": None, "parse": parse, "raw": ["?"], "attempt": 1,
                 "partial_answers": partial}
    edit = {"status": "ok", "edited_image": "edits/s.png", "seed": seed, "attempt": 1}
    return build_row(sample, edit=edit, judgement=judgement, protocol=protocol, facts=facts, failure_policy=policy)


def test_strict_keeps_every_unparsed_judgement_failed_and_unscored():
    for name, category in (("re_edit", "physical"), ("risebench", "temporal"), ("kris", "count_change"),
                           ("viescore", "x")):
        r = row(name, category, {}, policy="strict")
        assert r["status"] == "judge_failed" and r["score"] is None and r["metrics"] is None
        assert "fills" not in r


def test_re_edit_fills_no_five_and_five_five():
    r = row("re_edit", "physical", {"instruction_following": 9.0}, policy="reference")
    assert r["status"] == "ok" and r["answers"] == {"yes": 0.0, "instruction_following": 9.0,
                                                    "editing_success": 5.0, "over_editing": 5.0}
    assert r["metrics"] == {"yes_rate": 0.0, "instruction_following": 9.0, "semantic_consistency": 5.0}
    assert r["fills"] == {"filled": 3, "guessed": 0, "dropped": 0, "zeroed": 0}


def test_risebench_counts_zero_in_accuracy_and_no_score():
    r = row("risebench", "temporal_reasoning", {"reasoning": 5.0, "plausibility": 5.0}, policy="reference")
    assert r["status"] == "judge_failed" and r["score"] is None
    assert r["metrics"]["accuracy"] == 0.0 and r["metrics"]["score"] is None and r["metrics"]["reasoning"] is None
    assert r["fills"]["zeroed"] == 1


def test_kris_drops_only_the_unparsed_dimension_and_fails_when_none_is_left():
    r = row("kris", "count_change", {"consistency": 4.0, "instruction": 2.0}, policy="reference")
    assert r["status"] == "ok" and r["metrics"]["quality"] is None
    assert r["score"] == pytest.approx(3.0) and r["fills"]["dropped"] == 1
    assert row("kris", "count_change", {}, policy="reference")["status"] == "judge_failed"


def test_viescore_guesses_per_view_from_the_samples_seed():
    r = row("viescore", "x", {"naturalness": 6.0, "artifacts": 8.0}, policy="reference", seed=11)
    guess = random.Random("11/semantics").randint(0, 10)
    assert r["answers"]["editing_success"] == r["answers"]["over_editing"] == guess
    assert r["metrics"]["quality"] == 6.0 and r["fills"]["guessed"] == 1
    again = row("viescore", "x", {"naturalness": 6.0, "artifacts": 8.0}, policy="reference", seed=11)
    assert again["answers"] == r["answers"]  # the same seed, the same guess: resume and process count agnostic


@pytest.mark.parametrize("parse", [None])
def test_a_judge_error_or_nan_logits_is_no_parse_failure_and_stays_failed(parse):
    r = row("re_edit", "physical", {}, policy="reference", parse=parse)
    assert r["status"] == "judge_failed" and r["fills"] == {"filled": 0, "guessed": 0, "dropped": 0, "zeroed": 0}


def test_a_resume_with_another_failure_policy_rebuilds_every_row_under_it(tmp_path):
    """failure_policy is applied when results are written, to every record: a resume under another policy re-scores
    the whole run (no row of the old policy is kept beside new ones), so it needs no place in the fingerprint."""
    import json

    from bench_lib import cli

    out = tmp_path / "out"
    args = ["--editor", "identity", "--limit", "2", "--baselines", "", "--gallery", "false", "--output_dir", str(out)]
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and not any("fills" in r for r in rows)
    assert cli.main([*args, "--failure_policy", "reference"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("fills" in r for r in rows)  # every row written under the new policy
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["config"]["failure_policy"] == "reference" and report["meta"]["reused_edits"] == 2


def test_a_filled_logits_judgement_keeps_the_distributions_its_metrics_read():
    """Logits mode: the answers a failed judgement kept (failure_policy reference counts them) keep their
    distributions, so a metric that reads one (KRIS's knowledge cap: P(instruction <= 2)) is what it is in an ok
    judgement with the same answers, not the cap of a one-hot at the expected value."""
    from bench_lib.backends import Judge
    from bench_lib.judge_stage import JudgeOutcome, judge_record
    from bench_lib.judges.policy import judge
    from bench_lib.judging import Reading, ScaleReader

    protocol = PROTOCOLS.get("kris")(SimpleNamespace(**{**vars(CFG), "judge_mode": "logits"}))
    sample = Sample(index=0, id="s", category="chemistry", instruction="do it", source_image=None)
    facts = protocol.facts(sample, {})
    requests = protocol.requests(facts.view, {"source": None, "edited": None, "reference": None, "sources": (None,)})

    class Backend(Judge):  # instruction P(2) = P(4) = 0.5, every other answer 5; the consistency view off or not
        min_scale_mass = 0.5

        def __init__(self, consistency_off: bool):
            super().__init__(None, judge=None, device=None)
            self.off = consistency_off

        def generate(self, prompts):
            raise AssertionError("logits mode generates nothing here")

        def read_scales(self, batch):
            off = self.off

            class Reader(ScaleReader):
                def read(self, prompt, rows):
                    out = []
                    for r in batch:
                        name = next(q.name for q in r.questions if q.text in prompt.text)
                        if off and name == "consistency":
                            out.append(Reading(3.0, [0.0, 0.0, 1.0, 0.0, 0.0], 0.01))
                        elif name == "instruction":
                            out.append(Reading(3.0, [0.0, 0.5, 0.0, 0.5, 0.0], 0.9))
                        else:
                            out.append(Reading(5.0, [0.0, 0.0, 0.0, 0.0, 1.0], 0.9))
                    return out

            return Reader()

    rows = []
    for off in (False, True):
        (judgement,) = judge(Backend(off), [requests], mode="logits")
        outcome = JudgeOutcome(judgement=judgement, status="judge_failed" if judgement.error else "ok",
                               error=judgement.error)
        rows.append(build_row(sample, edit={"status": "ok", "edited_image": "edits/s.png", "seed": 1, "attempt": 1},
                              judgement=judge_record("s", outcome, 1), protocol=protocol, facts=facts,
                              failure_policy="reference"))
    ok, filled = rows
    assert ok["status"] == filled["status"] == "ok" and filled["fills"]["dropped"] == 1
    assert ok["metrics"]["knowledge"] == pytest.approx(0.5 * 1 + 0.5 * 5)  # the cap, in expectation
    assert filled["metrics"]["knowledge"] == pytest.approx(ok["metrics"]["knowledge"])
    assert filled["metrics"]["instruction"] == ok["metrics"]["instruction"] == 3.0
