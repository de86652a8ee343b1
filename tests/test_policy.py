"""The parse and re-ask policy (bench_lib.judges.policy) on canned answers: a scripted backend behind the judge
contract, no model. Any backend that gives these answers gets these judgements."""

import math

import pytest

from bench_lib.backends import Judge
from bench_lib.judges.policy import judge
from bench_lib.judging import (
    ONE_TO_FIVE,
    YES_NO,
    ZERO_TO_TEN,
    Completion,
    ImagePart,
    JudgeRequest,
    Question,
    Reading,
    ScaleReader,
    TextPart,
)

INSTRUCTION, CONSISTENCY = Question("instruction", ZERO_TO_TEN, "Rate I."), Question("consistency", ZERO_TO_TEN,
                                                                                      "Rate C.")
YES = Question("yes", YES_NO, "Correct?")
QUALITY = Question("quality", ONE_TO_FIVE, "Rate Q.")


def request(sample: str, view: str = "rubric", questions=(INSTRUCTION, CONSISTENCY)) -> JudgeRequest:
    """A request whose text names its sample (the scripted backend answers by it)."""
    return JudgeRequest(view, None, (TextPart("Edited image:"), ImagePart(None), TextPart(f"sample {sample}")),
                        tuple(questions))


def sample_of(content) -> str:
    return next(p.text for p in content if isinstance(p, TextPart) and p.text.startswith("sample "))[7:]


class ScriptedBackend(Judge):
    """A judge backend with canned answers, behind the same contract as a real one.

    generate: `texts[sample]` is the list of that sample's answers, one per time it is asked. logits:
    `readings[(sample, question)]` the list of (value, mass) readings, one per time it is asked. Every call is
    recorded: ("generate", samples, last text of the prompt) or ("read", question text, rows asked for)."""

    def __init__(self, texts=None, readings=None, min_mass=0.5):
        super().__init__(None, judge=None, device=None)
        self.texts, self.readings, self.min_mass = texts or {}, readings or {}, min_mass
        self.calls = []

    @property
    def min_scale_mass(self) -> float:
        return self.min_mass

    def generate(self, prompts):
        samples = [sample_of(p.content) for p in prompts]
        self.calls.append(("generate", samples, prompts[0].content[-1].text))
        return [Completion(self.texts[s].pop(0)) for s in samples]

    def read_scales(self, requests):
        backend = self

        class Reader(ScaleReader):
            def read(self, prompt, rows):
                backend.calls.append(("read", prompt.text, list(rows)))
                question = prompt.text.split(" ")[0] + " " + prompt.text.split(" ")[1]  # "Rate I." ...
                out = []
                for k, r in enumerate(requests):
                    if k not in rows:
                        out.append(None)
                        continue
                    name = next(q.name for q in r.questions if q.text == question)
                    value, mass = backend.readings[(sample_of(r.content), name)].pop(0)
                    scale = next(q.scale for q in r.questions if q.name == name)
                    dist = [1.0 if v == value else 0.0 for v in scale.values]
                    out.append(Reading(value, dist, mass, instead=lambda v=value: f"'x' {v}"))
                return out

        return Reader()


GOOD = '{"instruction": 8, "consistency": 9}'


def test_generate_mode_accepts_reasks_once_in_one_batch_and_fails_with_the_raw_answers_kept():
    backend = ScriptedBackend(texts={"a": [f"Melted correctly.\n{GOOD}"], "b": ["I think it is fine.", GOOD],
                                     "c": ["Score: 7", "still not JSON"]})
    first, second, third = judge(backend, [[request("a")], [request("b")], [request("c")]], mode="generate")
    assert [c[:2] for c in backend.calls] == [("generate", ["a", "b", "c"]), ("generate", ["b", "c"])]
    assert backend.calls[0][2].startswith("First write a short rationale")
    assert backend.calls[1][2].startswith("Reply with only this JSON object and no other text")  # stricter
    assert first.parse == "ok" and first.answers == {"instruction": 8.0, "consistency": 9.0}
    assert first.distributions["instruction"] == [0.0] * 8 + [1.0, 0.0, 0.0]  # one-hot in generate mode
    assert first.rationale == "Melted correctly." and first.raw == [] and first.error is None
    assert first.digit_mass is None
    assert second.parse == "reasked" and second.answers["consistency"] == 9.0 and second.raw == ["I think it is fine."]
    assert second.rationale is None  # the re-ask's answer had none
    assert third.parse == "failed" and third.answers is None and third.distributions is None
    assert third.raw == ["Score: 7", "still not JSON"] and third.error.startswith("the judge's answer did not parse "
                                                                                   "twice: ")


def test_generate_mode_views_are_batched_by_view_and_a_failed_view_fails_the_sample():
    """Two samples, two views each: one generation per view over both samples; rationales are labelled by view;
    a view that fails twice fails the sample even when its other view parsed."""
    quality = '{"quality": 4}'
    backend = ScriptedBackend(texts={"a": [f"Fine. {GOOD}", f"Sharp. {quality}"],
                                     "b": [GOOD, "blurry", "very blurry"]})
    samples = [[request(s), request(s, "quality", (QUALITY,))] for s in "ab"]
    a, b = judge(backend, samples, mode="generate")
    assert [c[:2] for c in backend.calls] == [("generate", ["a", "b"]), ("generate", ["a", "b"]),
                                              ("generate", ["b"])]
    assert a.answers == {"instruction": 8.0, "consistency": 9.0, "quality": 4.0}
    assert a.rationale == "[rubric] Fine. [quality] Sharp." and a.parse == "ok"
    assert b.answers is None and b.parse == "failed" and b.raw == ["blurry", "very blurry"]
    assert b.rationale is None  # its one rationale-less answer: nothing to join


def test_logits_mode_reasks_only_the_off_format_rows_and_keeps_what_the_judge_said():
    """Threshold 0.5: a row at 0.4 is asked again (strict question) and accepted at 0.9 ("reasked"); a row off
    twice fails with both raw answers; NaN fails as not finite (not a format problem); zero mass is off even with
    a zero threshold."""
    backend = ScriptedBackend(readings={
        ("ok", "instruction"): [(7.0, 0.9)], ("ok", "consistency"): [(6.0, 0.8)],
        ("once", "instruction"): [(3.0, 0.4), (4.0, 0.9)], ("once", "consistency"): [(5.0, 0.7)],
        ("never", "instruction"): [(2.0, 0.1), (2.0, 0.2)], ("never", "consistency"): [(5.0, 0.99)],
        ("nan", "instruction"): [(math.nan, math.nan), (math.nan, math.nan)], ("nan", "consistency"): [(1.0, 1.0)],
    })
    ok, once, never, nan = judge(backend, [[request(s)] for s in ("ok", "once", "never", "nan")], mode="logits")
    assert backend.calls == [("read", "Rate I. Answer with a single integer from 0 to 10 and nothing else.",
                              [0, 1, 2, 3]),
                             ("read", "Rate I. " + ZERO_TO_TEN.strict_instruction, [1, 2, 3]),
                             ("read", "Rate C. Answer with a single integer from 0 to 10 and nothing else.",
                              [0, 1, 2, 3])]
    assert ok.parse == "ok" and ok.answers == {"instruction": 7.0, "consistency": 6.0} and ok.raw == []
    assert ok.digit_mass == {"instruction": 0.9, "consistency": 0.8} and ok.rationale is None
    assert ok.distributions["instruction"][7] == 1.0
    assert once.parse == "reasked" and once.answers["instruction"] == 4.0 and once.raw == ["instruction: 'x' 3.0"]
    assert once.digit_mass["instruction"] == 0.9
    assert never.parse == "failed" and never.answers is None
    assert never.raw == ["instruction: 'x' 2.0", "instruction (re-asked): 'x' 2.0"]
    assert never.error == ("the judge answered off-format twice: P(answer on the scale) for instruction 0.2 < "
                           "judge_min_digit_mass 0.5")
    assert never.digit_mass == {"instruction": 0.2, "consistency": 0.99}  # kept when it failed
    assert nan.parse is None and nan.error == "the judge's logits are not finite (NaN/inf)"
    assert nan.digit_mass == {"instruction": None, "consistency": 1.0}
    zero = ScriptedBackend(readings={("z", "instruction"): [(5.0, 0.0), (5.0, 0.0)],
                                     ("z", "consistency"): [(5.0, 1e-9)]}, min_mass=0.0)
    (judgement,) = judge(zero, [[request("z")]], mode="logits")
    assert judgement.parse == "failed" and "for instruction 0.0 < judge_min_digit_mass 0.0" in judgement.error


def test_a_backend_that_loses_answers_is_an_error_never_a_judgement():
    short = ScriptedBackend(texts={"a": [GOOD]})
    short.generate = lambda prompts: [Completion(GOOD)]  # one completion, whatever the batch
    with pytest.raises(RuntimeError, match="returned 1 completions for 2 prompts"):
        judge(short, [[request("a")], [request("a")]], mode="generate")
    silent = ScriptedBackend()

    class Empty(ScaleReader):
        def read(self, prompt, rows):
            return [None] * 2

    silent.read_scales = lambda requests: Empty()
    with pytest.raises(RuntimeError, match=r"no reading for rows \[0, 1\]"):
        judge(silent, [[request("a")], [request("b")]], mode="logits")
    with pytest.raises(ValueError, match="judge mode 'sampled'"):
        judge(short, [[request("a")]], mode="sampled")


class SequenceReader(ScriptedBackend):
    """Logits mode along a reply layout: `readings[sample]` is that sample's list of (value, mass) readings, one per
    score read, in the order the views and their scores are read."""

    def read_scales(self, requests):
        backend = self

        class Reader(ScaleReader):
            def read(self, prompt, rows):
                out = []
                for r in requests:
                    value, mass = backend.readings[sample_of(r.content)].pop(0)
                    dist = [float(v == value) for v in prompt.scale.values]
                    out.append(Reading(value, dist, mass, instead=lambda: "'x'"))
                return out

        return Reader()


def test_a_failed_view_leaves_the_other_views_answers_for_failure_policy_reference_as_in_generate_mode():
    """One view whose answer is off the scale fails the sample, whatever the mode; the answers the judge gave in
    its other views stay the failed judgement's partial answers (failure_policy reference counts them: RE-Edit
    fills only what was missing, KRIS-Bench drops only that dimension). In generate mode each view parses on its
    own; logits mode is the same: a later view is still read and kept. Along a reply layout (a benchmark's JSON)
    a view with one value off the scale counts as a whole answer that did not parse. Non-finite logits in any view
    make the judgement no parse failure."""
    from bench_lib.judging import ScoreJSON

    yes = Question("yes", YES_NO, "Correct edit?")
    views = [request("a", "reasoning", (yes,)), request("a", "quality", (QUALITY,)), request("a")]
    b = ScriptedBackend(readings={("a", "yes"): [(1.0, 0.1), (1.0, 0.1)], ("a", "quality"): [(4.0, 0.9)],
                                  ("a", "instruction"): [(3.0, 0.1), (3.0, 0.2)], ("a", "consistency"): [(9.0, 0.9)]})
    (logits,) = judge(b, [views], mode="logits")
    b = ScriptedBackend(texts={"a": ["nope", "nope again", '{"quality": 4}', '{"instruction": 3}',
                                     '{"instruction": 3}']})  # each view asked again at once
    (generate,) = judge(b, [views], mode="generate")
    for judgement in (logits, generate):
        assert judgement.parse == "failed" and judgement.answers is None
        assert judgement.partial_answers == {"quality": 4.0}  # the rubric view's consistency went with its I

    verbatim = ScoreJSON()
    sc = (Question("editing_success", ZERO_TO_TEN, "Rate ES."), Question("over_editing", ZERO_TO_TEN, "Rate OE."))

    def re_edit_views(sample):
        return [JudgeRequest(view, None, (ImagePart(None), TextPart(f"sample {sample}")), questions, verbatim)
                for view, questions in (("reasoning", (yes,)), ("instruction_following", (INSTRUCTION,)),
                                        ("semantic_consistency", sc))]

    backend = SequenceReader(readings={"a": [(1.0, 0.1), (8.0, 0.9), (3.0, 0.1), (6.0, 0.9)],
                                       "b": [(0.0, 0.9), (7.0, 0.9), (5.0, 0.9), (4.0, 0.9)],
                                       "n": [(1.0, 0.1), (math.nan, math.nan), (5.0, 0.9), (4.0, 0.9)]})
    a, b, n = judge(backend, [re_edit_views(s) for s in "abn"], mode="logits")
    assert a.parse == "failed" and a.error.startswith("the judge answered off-format (after the reply supplied): "
                                                      "P(answer on the scale) for yes 0.1")
    assert a.partial_answers == {"instruction": 8.0}  # the SC pair, one of its values off the scale: neither
    assert a.reply_prefixes["over_editing"] == '{"score": [3, '  # still read after the answer it continues with
    assert b.parse == "ok" and b.answers == {"yes": 0.0, "instruction": 7.0, "editing_success": 5.0,
                                             "over_editing": 4.0}
    assert n.parse is None and n.answers is None  # NaN after an off-format view: not a parse failure
