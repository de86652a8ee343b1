import torch
import pytest

from bench_lib.judges import DEFAULT_RUBRIC, JudgeRequest, Rubrics, expected_score, reference_block

DIGITS = list(range(10, 20))  # token ids of "0".."9" in a made-up vocabulary of 32
NON_DIGIT = 3


def logits_for(probs: dict[int, float]) -> torch.Tensor:
    p = torch.full((32,), 1e-12)
    for token, value in probs.items():
        p[token] = value
    return p.log()


def test_expected_score_point_masses_including_ten():
    cases = []
    for value in range(11):
        first_digit = 1 if value == 10 else value
        after_one = {DIGITS[0]: 1.0} if value == 10 else {NON_DIGIT: 1.0}
        cases.append((logits_for({DIGITS[first_digit]: 1.0}), logits_for(after_one)))
    first = torch.stack([c[0] for c in cases])
    second = torch.stack([c[1] for c in cases])
    score, mass = expected_score(first, second, DIGITS)
    assert score.tolist() == pytest.approx(list(range(11)), abs=1e-6)
    assert mass.tolist() == pytest.approx([1.0] * 11)


def test_expected_score_mixture_and_renormalisation():
    # 50% "7", 25% "1" -> 10 with prob 0.8, 25% non-digit (off-format, renormalised away)
    first = logits_for({DIGITS[7]: 0.5, DIGITS[1]: 0.25, NON_DIGIT: 0.25})
    # after "1": "0" 0.6, "5" 0.25 (would be 15: invalid, renormalised), non-digit 0.15
    second = logits_for({DIGITS[0]: 0.6, DIGITS[5]: 0.25, NON_DIGIT: 0.15})
    score, mass = expected_score(first[None], second[None], DIGITS)
    p7, p1 = 0.5 / 0.75, 0.25 / 0.75
    p10 = 0.6 / 0.75
    assert score.item() == pytest.approx(7 * p7 + p1 * (1 * (1 - p10) + 10 * p10), abs=1e-6)
    assert mass.item() == pytest.approx(0.75, abs=1e-6)
    assert 0.0 <= score.item() <= 10.0


def test_rubric_selection_per_category(tmp_path):
    rubrics = Rubrics("bench_lib/prompts")
    for category in ("physics", "environment", "social", "causal", "referential"):
        assert rubrics.rubric_name(category) == category
    assert rubrics.rubric_name("Physics ") == "physics"
    assert rubrics.rubric_name("temporal_reasoning") == DEFAULT_RUBRIC
    for text in rubrics.templates.values():
        assert "{instruction}" in text and "{reference}" in text
        assert text.strip().endswith("Answer with a single integer from 0 to 10 and nothing else.")
    from PIL import Image
    img = Image.new("RGB", (4, 4))
    request = JudgeRequest(category="causal", instruction="Pop the {balloon}", source=img, edited=img,
                           reference_text="scraps of rubber")
    rendered = rubrics.render(request)
    assert "Pop the {balloon}" in rendered and "scraps of rubber" in rendered and "{reference}" not in rendered
    assert rendered.startswith(rubrics.templates["causal"].split("{instruction}")[0])


def test_reference_block_variants():
    assert "third image" in reference_block(None, True)
    assert "melted" in reference_block("melted", False) and "third image" not in reference_block("melted", False)
    assert "No reference" in reference_block(None, False)
