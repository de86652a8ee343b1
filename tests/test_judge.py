"""The Qwen-VL judge in both modes, on tiny real-class Qwen3-VL, Qwen3-VL-MoE and Qwen2.5-VL models, running
every protocol."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from bench_lib.config import SUBSCORES, JudgeConfig
from bench_lib.judges.policy import judge as judge_samples
from bench_lib.judges.policy import off_format
from bench_lib.judges.qwen_vl import QwenVLConfig, QwenVLJudge, chat_messages, expected_score, scale_distribution
from bench_lib.judges.rubrics import Rubrics
from bench_lib.protocols import PROTOCOLS, make_protocol, view_of
from bench_lib.protocols.base import ONE_TO_FIVE, YES_NO, ZERO_TO_TEN

JUDGES = {"qwen3-vl": "Qwen3VLForConditionalGeneration", "qwen3-vl-moe": "Qwen3VLMoeForConditionalGeneration",
          "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration"}
PROTOCOL_NAMES = sorted(PROTOCOLS)


@pytest.fixture(scope="module", params=sorted(JUDGES))
def judge(request):
    cfg = QwenVLConfig(judge_model=f"tiny:{request.param}", judge_dtype="float32", judge_min_digit_mass=0.0,
                       judge_max_new_tokens=12)
    judge = QwenVLJudge(cfg, judge=JudgeConfig(), device=torch.device("cpu"))
    assert type(judge.model).__name__ == JUDGES[request.param]
    yield judge
    judge.close()


def use(judge, protocol: str = "default", mode: str = "logits"):
    """Set the judge's mode and return the protocol (the fixture is shared: every test sets what it needs)."""
    judge.judge_cfg = dataclasses.replace(judge.judge_cfg, protocol=protocol, judge_mode=mode)
    judge.cfg = dataclasses.replace(judge.cfg, judge_min_digit_mass=0.0)
    return make_protocol(judge.judge_cfg, Rubrics(judge.judge_cfg.prompts_dir))


def judged(judge, protocol, samples):
    """The judgements of `samples` ((view, images) pairs) through the policy, as the judge stage asks them."""
    return judge_samples(judge, [protocol.requests(view, images) for view, images in samples],
                         mode=judge.judge_cfg.judge_mode)


def img(w, h, color):
    return Image.new("RGB", (w, h), color)


def requests(protocol) -> list[tuple]:
    """(view, images) of three samples of different shapes (so left padding is exercised), one with a reference
    image; their categories exercise each protocol's dimensions."""
    samples = [
        SimpleNamespace(category="physics", instruction="Melt the ice cube.", reference_text="A puddle of water.",
                        reference_image=None, fields={"description": "An ice cube on a table.",
                                                      "rationale": "Ice melts in the sun.",
                                                      "explanation": "Ice melts above 0 C."}),
        SimpleNamespace(category="spatial_reasoning", instruction="Put the second cup on top of the others.",
                        reference_text=None, reference_image=img(32, 32, "red"), fields={}),
        SimpleNamespace(category="logical_reasoning", instruction="Draw the missing number.", reference_text="7",
                        reference_image=None, fields={"consistency_free": None}),
    ]
    images = [(img(64, 48, "white"), img(64, 48, "blue")), (img(40, 96, "grey"), img(96, 40, "red")),
              (img(128, 128, "green"), img(50, 70, "brown"))]
    return [(view_of(s, protocol, {}), {"source": src, "edited": edited,
                                        "reference": img(32, 32, "red") if s.reference_image is not None else None})
            for s, (src, edited) in zip(samples, images)]


def test_prompt_lengths_differ_in_the_batch(judge):
    protocol = use(judge)
    first = [protocol.requests(view, images)[0] for view, images in requests(protocol)]
    lengths = [len(judge.processor.apply_chat_template(chat_messages(r.prompt("?")), add_generation_prompt=True,
                                                       tokenize=True, return_dict=True)["input_ids"][0]) for r in first]
    assert len(set(lengths)) == 3  # so left padding is really exercised


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_logits_mode_batched_equals_unbatched(judge, protocol):
    protocol = use(judge, protocol)
    batch = requests(protocol)
    batched = judged(judge, protocol, batch)
    single = [judged(judge, protocol, [r])[0] for r in batch]
    values = []
    for (view, _), b, s in zip(batch, batched, single):
        assert b.error is None and b.parse == "ok" and b.raw == [] and b.rationale is None
        questions = protocol.questions(view)
        assert set(b.answers) == set(questions)  # every question answered
        for name, question in questions.items():
            assert question.scale.low <= b.answers[name] <= question.scale.high
            assert b.answers[name] == pytest.approx(s.answers[name], abs=1e-4)
            assert b.distributions[name] == pytest.approx(s.distributions[name], abs=1e-5)
            assert sum(b.distributions[name]) == pytest.approx(1.0)
            assert b.digit_mass[name] == pytest.approx(s.digit_mass[name], rel=1e-3)
            values.append(s.answers[name])
    assert max(values) - min(values) > 1e-3  # the random judge is not constant: the equality above means something


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_generate_mode_batched_equals_unbatched(judge, protocol):
    """The random judge writes noise, so every answer fails and is kept verbatim: batched and one-by-one
    generation must have written the same text (left padding done right), and only the new tokens."""
    protocol = use(judge, protocol, "generate")
    batch = requests(protocol)
    batched = judged(judge, protocol, batch)
    single = [judged(judge, protocol, [r])[0] for r in batch]
    for b, s in zip(batched, single):
        assert b.raw == s.raw and len(b.raw) >= 2 and all(b.raw)
        assert b.parse == "failed" and b.answers is None and "did not parse twice" in b.error
        assert not any("<|im_end|>" in text or "JSON object" in text for text in b.raw)  # only new tokens
    assert len({b.raw[0] for b in batched}) == 3  # different answers: the equality means something


def test_shared_prefix_equals_the_full_prompt(judge):
    """Logits mode prefills a view's images and text once and asks each question on the cached prefix. That
    must give what one plain forward pass over the whole prompt (question included, then a forced "1") gives."""
    protocol = use(judge)
    batch = requests(protocol)
    cached = judged(judge, protocol, batch)
    model, one = judge.model, judge.digit_ids[1]
    for (view, images), judgement in zip(batch, cached):
        (request,) = protocol.requests(view, images)
        for question in request.questions:
            inputs = judge.processor.apply_chat_template(
                chat_messages(request.prompt(f"{question.text} {question.scale.instruction}")),
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
            inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[one]])], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], 1)
            if "mm_token_type_ids" in inputs:
                inputs["mm_token_type_ids"] = torch.cat(
                    [inputs["mm_token_type_ids"], torch.zeros(1, 1, dtype=inputs["mm_token_type_ids"].dtype)], 1)
            with torch.inference_mode():
                logits = model(**inputs).logits[0, -2:]
            score, mass = expected_score(logits[:1], logits[1:], judge.digit_ids)
            assert judgement.answers[question.name] == pytest.approx(score.item(), abs=1e-4)
            assert judgement.digit_mass[question.name] == pytest.approx(mass.item(), rel=1e-3)


def test_generate_mode_answers_of_the_random_judge_fail_after_one_reask(judge):
    protocol = use(judge, "default", "generate")
    for judgement in judged(judge, protocol, requests(protocol)[:2]):
        assert judgement.answers is None and judgement.parse == "failed"
        assert "did not parse twice" in judgement.error
        assert len(judgement.raw) == 2 and all(judgement.raw)  # the first answer and the re-ask's, kept


def test_logits_mode_off_format_answers_fail_after_one_reask(judge):
    protocol = use(judge)
    judge.cfg = dataclasses.replace(judge.cfg, judge_min_digit_mass=0.5)  # the random judge puts <5% on digits
    try:
        judgements = judged(judge, protocol, requests(protocol)[:2])
    finally:
        judge.cfg = dataclasses.replace(judge.cfg, judge_min_digit_mass=0.0)
    for judgement in judgements:
        assert judgement.answers is None and judgement.parse == "failed"
        assert "off-format twice" in judgement.error
        assert [entry.split(":")[0] for entry in judgement.raw] == [
            f"{name}{suffix}" for name in SUBSCORES for suffix in ("", " (re-asked)")]
        assert all(0 < judgement.digit_mass[name] < 0.5 for name in SUBSCORES)


def test_answer_tokens(judge):
    use(judge)
    tokenizer = judge.processor.tokenizer
    assert [tokenizer.decode([i]) for i in judge.digit_ids] == list("0123456789")
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2
    no, yes = judge.answer_ids(YES_NO)
    assert {tokenizer.decode([i]).strip().lower() for i in yes} <= {"yes", "y", "ye"}  # each spelling's first token
    assert not set(no) & set(yes)
    assert judge.answer_ids(ONE_TO_FIVE) == tuple([judge.digit_ids[d]] for d in range(1, 6))


def test_scale_distributions_are_the_renormalised_next_token_probabilities():
    logits = torch.full((1, 30), -50.0)
    logits[0, [3, 4, 5, 7]] = torch.log(torch.tensor([0.2, 0.3, 0.1, 0.4]))  # yes spelled 3 or 4, no 5, other 7
    value, mass, dist = scale_distribution(logits, ([5], [3, 4]), (0.0, 1.0))
    assert mass.item() == pytest.approx(0.6) and value.item() == pytest.approx(0.5 / 0.6)
    assert dist[0].tolist() == pytest.approx([0.1 / 0.6, 0.5 / 0.6])
    first, after_one = torch.full((1, 30), -50.0), torch.full((1, 30), -50.0)
    digits = list(range(10, 20))
    first[0, [10, 11, 17]] = torch.log(torch.tensor([0.1, 0.6, 0.3]))  # P(0) .1, P(1 or 10) .6, P(7) .3
    after_one[0, 10] = 0.0  # after "1", certainly "0": it was 10
    score, mass, dist = expected_score(first, after_one, digits, with_distribution=True)
    assert dist[0].tolist() == pytest.approx([0.1, 0.0, 0, 0, 0, 0, 0, 0.3, 0, 0, 0.6])
    assert score.item() == pytest.approx(0.3 * 7 + 0.6 * 10) and sum(dist[0].tolist()) == pytest.approx(1.0)
    assert ZERO_TO_TEN.values[-1] == 10.0


def test_checkpoint_generation_settings_do_not_change_the_judge(judge):
    """transformers fills unset generation fields from the checkpoint's generation_config; a shipped
    repetition penalty, beam count or n-gram block must not reach the judge's greedy decoding."""
    protocol = use(judge)
    batch = requests(protocol)[:2]
    prompts = [protocol.requests(view, images)[0].prompt("Describe the edit.") for view, images in batch]
    plain_text = judge.generate(prompts)
    plain_scores = judged(judge, protocol, batch)
    shipped = judge.model.generation_config
    saved = (shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size)
    shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size = 1.5, 3, 2
    try:
        assert judge.generate(prompts) == plain_text
        for a, b in zip(judged(judge, protocol, batch), plain_scores):
            assert a.answers == pytest.approx(b.answers, abs=1e-6)
    finally:
        shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size = saved


def test_no_probability_on_the_scale_is_off_format_even_with_a_zero_threshold(judge):
    use(judge)
    assert judge.cfg.judge_min_digit_mass == 0.0 and judge.min_scale_mass == 0.0
    assert off_format(0.0, judge.min_scale_mass) and off_format(float("nan"), judge.min_scale_mass)
    assert not off_format(1e-9, judge.min_scale_mass)
