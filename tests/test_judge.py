import pytest
import torch
from PIL import Image

from bench_lib.config import JudgeConfig
from bench_lib.judges import JudgeRequest, QwenVLJudge


@pytest.fixture(scope="module")
def judge():
    judge = QwenVLJudge(JudgeConfig(judge_model="tiny:qwen3-vl", judge_dtype="float32"), device=torch.device("cpu"))
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


def test_batched_scores_equal_unbatched(judge):
    batch = requests()
    batched = judge.score(batch)
    single = [judge.score([r])[0] for r in batch]
    for b, s in zip(batched, single):
        assert 0.0 <= b.score <= 10.0
        assert b.score == pytest.approx(s.score, abs=1e-4)
        assert b.digit_mass == pytest.approx(s.digit_mass, rel=1e-3)
    scores = [s.score for s in single]
    assert max(scores) - min(scores) > 1e-3  # the random judge is not constant: the equality above means something


def test_prompt_lengths_differ_in_the_batch(judge):
    from bench_lib.judges import build_messages

    convs = [build_messages(r, judge.rubrics.render(r)) for r in requests()]
    lengths = [len(judge.processor.apply_chat_template(c, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"][0]) for c in convs]
    assert len(set(lengths)) == 3  # so left padding is really exercised


def test_digit_tokens(judge):
    tokenizer = judge.processor.tokenizer
    assert [tokenizer.decode([i]) for i in judge.digit_ids] == list("0123456789")
    assert len(tokenizer.encode("10", add_special_tokens=False)) == 2
