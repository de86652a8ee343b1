"""The Qwen-VL judge in both modes, on tiny real-class Qwen3-VL, Qwen3-VL-MoE and Qwen2.5-VL models."""

import dataclasses

import pytest
import torch
from PIL import Image

from bench_lib.config import SUBSCORES, JudgeConfig
from bench_lib.judges.common import ANSWER_FORMAT, QUESTIONS, JudgeRequest, build_messages
from bench_lib.judges.qwen_vl import QwenVLConfig, QwenVLJudge, expected_score

JUDGES = {"qwen3-vl": "Qwen3VLForConditionalGeneration", "qwen3-vl-moe": "Qwen3VLMoeForConditionalGeneration",
          "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration"}


@pytest.fixture(scope="module", params=sorted(JUDGES))
def judge(request):
    cfg = QwenVLConfig(judge_model=f"tiny:{request.param}", judge_dtype="float32", judge_min_digit_mass=0.0,
                       judge_max_new_tokens=12)
    judge = QwenVLJudge(cfg, judge=JudgeConfig(), device=torch.device("cpu"))
    assert type(judge.model).__name__ == JUDGES[request.param]
    yield judge
    judge.close()


def requests():
    def img(w, h, color):
        return Image.new("RGB", (w, h), color)

    return [
        JudgeRequest(category="physics", instruction="Melt the ice cube.", source=img(64, 48, "white"),
                     edited=img(64, 48, "blue"), reference_text="A puddle of water."),
        JudgeRequest(category="referential", instruction="Make the second cup from the left red, keep the others.",
                     source=img(40, 96, "grey"), edited=img(96, 40, "red"),
                     reference_image=img(32, 32, "red")),
        JudgeRequest(category="temporal_reasoning", instruction="Age it by ten years.",
                     source=img(128, 128, "green"), edited=img(50, 70, "brown")),
    ]


def test_prompt_lengths_differ_in_the_batch(judge):
    convs = [build_messages(r, judge.rubrics.render(r), "?") for r in requests()]
    lengths = [len(judge.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"][0]) for c in convs]
    assert len(set(lengths)) == 3  # so left padding is really exercised


def test_logits_mode_batched_equals_unbatched(judge):
    batch = requests()
    batched = judge.score(batch)
    single = [judge.score([r])[0] for r in batch]
    for b, s in zip(batched, single):
        assert b.error is None and b.parse == "ok" and b.raw == [] and b.rationale is None
        for name in SUBSCORES:
            assert 0.0 <= b.subscores[name] <= 10.0
            assert b.subscores[name] == pytest.approx(s.subscores[name], abs=1e-4)
            assert b.digit_mass[name] == pytest.approx(s.digit_mass[name], rel=1e-3)
    values = [s.subscores[name] for s in single for name in SUBSCORES]
    assert max(values) - min(values) > 1e-3  # the random judge is not constant: the equality above means something


def test_shared_prefix_equals_the_full_prompt(judge):
    """Logits mode prefills images + rubric once and asks each question on the cached prefix. That must give
    what one plain forward pass over the whole prompt (question included, then a forced "1") gives."""
    batch = requests()
    cached = judge.score(batch)
    model, one = judge.model, judge.digit_ids[1]
    for request, judgement in zip(batch, cached):
        for name in SUBSCORES:
            inputs = judge.processor.apply_chat_template(
                [build_messages(request, judge.rubrics.render(request), f"{QUESTIONS[name]} {ANSWER_FORMAT}")],
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
            inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[one]])], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], 1)
            if "mm_token_type_ids" in inputs:
                inputs["mm_token_type_ids"] = torch.cat(
                    [inputs["mm_token_type_ids"], torch.zeros(1, 1, dtype=inputs["mm_token_type_ids"].dtype)], 1)
            with torch.inference_mode():
                logits = model(**inputs).logits[0, -2:]
            score, mass = expected_score(logits[:1], logits[1:], judge.digit_ids)
            assert judgement.subscores[name] == pytest.approx(score.item(), abs=1e-4)
            assert judgement.digit_mass[name] == pytest.approx(mass.item(), rel=1e-3)


def test_generate_mode_batched_equals_unbatched(judge):
    batch = requests()
    batched = judge.generate_text(batch, "Describe the edit.")
    single = [judge.generate_text([r], "Describe the edit.")[0] for r in batch]
    assert batched == single
    assert len(set(single)) == 3 and all(single)  # different, non-empty answers: the equality means something
    assert not any("<|im_end|>" in text or "Describe the edit" in text for text in single)  # only new tokens


def test_generate_mode_answers_of_the_random_judge_fail_after_one_reask(judge):
    judge.judge_cfg = dataclasses.replace(judge.judge_cfg, judge_mode="generate")
    try:
        judgements = judge.score(requests()[:2])
    finally:
        judge.judge_cfg = dataclasses.replace(judge.judge_cfg, judge_mode="logits")
    for judgement in judgements:
        assert judgement.subscores is None and judgement.parse == "failed"
        assert "did not parse twice" in judgement.error
        assert len(judgement.raw) == 2 and all(judgement.raw)  # the first answer and the re-ask's, kept


def test_logits_mode_off_format_answers_fail_after_one_reask(judge):
    judge.cfg = dataclasses.replace(judge.cfg, judge_min_digit_mass=0.5)  # the random judge puts <5% on digits
    try:
        judgements = judge.score(requests()[:2])
    finally:
        judge.cfg = dataclasses.replace(judge.cfg, judge_min_digit_mass=0.0)
    for judgement in judgements:
        assert judgement.subscores is None and judgement.parse == "failed"
        assert "off-format twice" in judgement.error
        assert [entry.split(":")[0] for entry in judgement.raw] == [
            f"{name}{suffix}" for name in SUBSCORES for suffix in ("", " (re-asked)")]
        assert all(0 < judgement.digit_mass[name] < 0.5 for name in SUBSCORES)


def test_digit_tokens(judge):
    tokenizer = judge.processor.tokenizer
    assert [tokenizer.decode([i]) for i in judge.digit_ids] == list("0123456789")
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2


def test_parse_policy_with_crafted_answers(judge, monkeypatch):
    """ok on the first answer, ok only when re-asked, never ok: what each gets, in one batch."""
    good = '{"instruction": 8, "consistency": 9, "quality": 7}'
    answers = iter([[f"Melted correctly.\n{good}", "I think it is fine.", "Score: 7"],
                    [good.replace("8", "2"), "still not JSON"]])
    asked = []

    def generate_text(batch, instructions, **kwargs):
        asked.append((len(batch), instructions))
        return next(answers)

    monkeypatch.setattr(judge, "generate_text", generate_text)
    judge.judge_cfg = dataclasses.replace(judge.judge_cfg, judge_mode="generate")
    try:
        first, second, third = judge.score(requests())
    finally:
        judge.judge_cfg = dataclasses.replace(judge.judge_cfg, judge_mode="logits")
    assert [n for n, _ in asked] == [3, 2] and "only this JSON" in asked[1][1]  # one batched, stricter re-ask
    assert first.parse == "ok" and first.subscores == {"instruction": 8.0, "consistency": 9.0, "quality": 7.0}
    assert first.rationale == "Melted correctly." and first.raw == [] and first.error is None
    assert second.parse == "reasked" and second.subscores["instruction"] == 2.0
    assert second.raw == ["I think it is fine."] and second.error is None
    assert third.parse == "failed" and third.subscores is None and third.raw == ["Score: 7", "still not JSON"]


def test_checkpoint_generation_settings_do_not_change_the_judge(judge):
    """transformers fills unset generation fields from the checkpoint's generation_config; a shipped
    repetition penalty, beam count or n-gram block must not reach the judge's greedy decoding."""
    batch = requests()[:2]
    plain_text = judge.generate_text(batch, "Describe the edit.")
    plain_scores = judge.score(batch)
    shipped = judge.model.generation_config
    saved = (shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size)
    shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size = 1.5, 3, 2
    try:
        assert judge.generate_text(batch, "Describe the edit.") == plain_text
        for a, b in zip(judge.score(batch), plain_scores):
            assert a.subscores == pytest.approx(b.subscores, abs=1e-6)
    finally:
        shipped.repetition_penalty, shipped.num_beams, shipped.no_repeat_ngram_size = saved


def test_no_probability_on_digits_is_off_format_even_with_a_zero_threshold(judge):
    assert judge.cfg.judge_min_digit_mass == 0.0
    assert judge._off_format(0.0) and judge._off_format(float("nan")) and not judge._off_format(1e-9)
