import pytest
import torch

from bench_lib.judges.qwen_vl import expected_score
from bench_lib.judges.rubrics import Rubrics, reference_block
from bench_lib.judging import AnswerFormatError, parse_answer
from bench_lib.protocols.base import YES_NO, ZERO_TO_TEN, Question
from bench_lib.scoring import average_ranks, combine, kendall_tau_b, spearman

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


def test_every_rubric_template_has_its_placeholders(tmp_path):
    rubrics = Rubrics("bench_lib/prompts")  # the lookup by category: tests/test_rubrics.py
    for text in rubrics.templates.values():
        assert "{instruction}" in text and "{reference}" in text
        for criterion in ("INSTRUCTION:", "CONSISTENCY:", "QUALITY:"):  # each sub-score has its own scale
            block = text.split(criterion, 1)[1]
            assert "0 = " in block and "10 = " in block
    rendered = rubrics.render_named("causal", "Pop the {balloon}", "scraps of rubber", False)
    assert "Pop the {balloon}" in rendered and "scraps of rubber" in rendered and "{reference}" not in rendered
    assert rendered.startswith(rubrics.templates["causal"].split("{instruction}")[0])


def test_reference_block_variants():
    assert "third image" in reference_block(None, True)
    assert "melted" in reference_block("melted", False) and "third image" not in reference_block("melted", False)
    assert "No reference" in reference_block(None, False)


def test_score_formulas():
    sub = {"instruction": 9.0, "consistency": 4.0, "quality": 1.0}
    assert combine(sub, "viescore") == pytest.approx(2.0)  # sqrt(min(9, 4) * 1)
    assert combine(sub, "mean") == pytest.approx(14 / 3)
    assert combine(sub, "mean", {"instruction": 2.0, "consistency": 1.0, "quality": 1.0}) == pytest.approx(23 / 4)
    assert combine(sub, "min") == 1.0 and combine(sub, "instruction") == 9.0
    do_nothing = {"instruction": 0.0, "consistency": 10.0, "quality": 10.0}
    blank = {"instruction": 0.5, "consistency": 0.0, "quality": 2.0}
    assert combine(do_nothing, "viescore") == 0.0 and combine(blank, "viescore") == 0.0
    with pytest.raises(ValueError):
        combine(sub, "median")


def test_rank_correlations_on_known_values():
    x = [1, 2, 3, 4, 5]
    assert spearman(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert average_ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]
    # one swapped pair out of 10: tau = (9 - 1) / 10; rho = 1 - 6 * 2 / (5 * 24)
    y = [1, 2, 3, 5, 4]
    assert kendall_tau_b(x, y) == pytest.approx(0.8)
    assert spearman(x, y) == pytest.approx(0.9)
    # ties: x = [1, 1, 2, 3], y = [1, 2, 2, 3]: C = 4, D = 0, tied only in x 1, only in y 1 -> tau_b = 4 / 5
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # spearman with ties = pearson of average ranks [1.5, 1.5, 3, 4] and [1, 2.5, 2.5, 4]
    assert spearman([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5)  # sxy / sqrt(sxx * syy)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1], [2]) is None


GOOD = '{"instruction": 7, "consistency": 10, "quality": 3}'
DEFAULT = tuple(Question(name, ZERO_TO_TEN, "?") for name in ("instruction", "consistency", "quality"))


@pytest.mark.parametrize("text, rationale", [
    (GOOD, ""),
    (f"The ice is now water.\n{GOOD}", "The ice is now water."),
    (f"Melted, but the cup changed {{colour}}.\n```json\n{GOOD}\n```\n", "Melted, but the cup changed {colour}."),
    ('{"instruction":0,"consistency":0,"quality":10}', ""),
])
def test_parse_answer_accepts_a_final_json_object(text, rationale):
    scores, got_rationale = parse_answer(text, DEFAULT)
    assert got_rationale == rationale
    assert sorted(scores) == ["consistency", "instruction", "quality"]
    assert all(v == int(v) and 0 <= v <= 10 for v in scores.values())


@pytest.mark.parametrize("text, message", [
    ("", "does not end"),
    ("Score: 7", "does not end"),
    (f"{GOOD} I am sure.", "does not end"),
    ('{"instruction": 7, "consistency": 10}', "expected exactly"),
    ('{"instruction": 7, "consistency": 10, "quality": 3, "overall": 6}', "expected exactly"),
    ('{"instruction": 11, "consistency": 10, "quality": 3}', "instruction is 11"),
    ('{"instruction": 7.5, "consistency": 10, "quality": 3}', "instruction is 7.5"),
    ('{"instruction": "7", "consistency": 10, "quality": 3}', "instruction is '7'"),
    ('{"instruction": true, "consistency": 10, "quality": 3}', "instruction is True"),
    ('{"instruction": -1, "consistency": 10, "quality": 3}', "instruction is -1"),
    ('{"instruction": 7, "consistency": 10, "quality": 3', "does not end"),
    ("[7, 10, 3]", "does not end"),
    ("{'instruction': 7, 'consistency': 10, 'quality': 3}", "valid JSON"),
    # ambiguous: a key twice (json.loads keeps the last), or a second answer object before the last one
    ('{"instruction": 0, "consistency": 10, "quality": 3, "instruction": 10}', "more than once: instruction"),
    (f'{GOOD}\n{{"instruction": 2, "consistency": 2, "quality": 2}}', "two answers"),
    (f'First guess: {{"instruction": 9}}. Final: {GOOD}', "two answers"),
    (f'```json\n{GOOD}\n```\nSo: {GOOD}', "two answers"),
])
def test_parse_answer_is_strict(text, message):
    with pytest.raises(AnswerFormatError, match=message):
        parse_answer(text, DEFAULT)


def test_yes_no_and_one_to_five_answers():
    from bench_lib.protocols.base import ONE_TO_FIVE

    questions = (Question("yes", YES_NO, "?"), Question("reasoning", ONE_TO_FIVE, "?"))
    assert parse_answer('Fine. {"yes": "Yes", "reasoning": 5}', questions) == ({"yes": 1.0, "reasoning": 5.0}, "Fine.")
    assert parse_answer('{"yes": "no", "reasoning": 1}', questions)[0] == {"yes": 0.0, "reasoning": 1.0}
    for bad, message in [('{"yes": true, "reasoning": 3}', "not yes or no"), ('{"yes": "maybe", "reasoning": 3}',
                                                                              "not yes or no"),
                         ('{"yes": "yes", "reasoning": 0}', "from 1 to 5"), ('{"yes": "yes", "reasoning": 6}',
                                                                            "from 1 to 5")]:
        with pytest.raises(AnswerFormatError, match=message):
            parse_answer(bad, questions)


def test_bootstrap_ci_known_answers():
    from bench_lib.scoring import bootstrap_ci, bootstrap_macro_ci

    assert bootstrap_ci([7.0] * 20) == (7.0, 7.0)  # constant scores: zero width
    assert bootstrap_ci([3.0]) is None and bootstrap_ci([]) is None
    values = [float(v) for v in range(1, 51)]
    low, high = bootstrap_ci(values)
    assert low < 25.5 < high and bootstrap_ci(values) == (low, high)  # fixed seed: reproducible
    se = (sum((v - 25.5) ** 2 for v in values) / 49 / 50) ** 0.5
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)  # about the normal-theory width
    assert bootstrap_macro_ci({"a": [1.0, 1.0], "b": [5.0, 5.0]}) == (3.0, 3.0)
    assert bootstrap_macro_ci({"a": [1.0, 2.0], "b": [5.0]}) is None


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    import numpy as np

    from bench_lib.scoring import bootstrap_ci

    rng = np.random.default_rng(123)
    trials = 300
    covered = 0
    for _ in range(trials):
        sample = rng.normal(5.0, 2.0, size=40)
        low, high = bootstrap_ci(sample, resamples=2000)
        covered += low <= 5.0 <= high
    # binomial(300, 0.95) has sd 3.8 trials; percentile intervals run slightly narrow at n = 40
    assert 0.90 <= covered / trials <= 0.99


def test_paired_difference_planted_and_absent():
    import numpy as np

    from bench_lib.scoring import paired_difference

    rng = np.random.default_rng(7)
    a = rng.normal(5.0, 1.5, size=80)
    planted = paired_difference(a, a + 0.5 + rng.normal(0, 0.5, size=80))
    assert planted["ci"][0] > 0 and planted["p_value"] < 0.001
    assert planted["difference"] == pytest.approx(planted["mean_b"] - planted["mean_a"])
    absent = paired_difference(a, a + rng.normal(0, 0.5, size=80))
    assert absent["ci"][0] < 0 < absent["ci"][1] and absent["p_value"] > 0.05
    same = paired_difference(a, a)
    assert same["difference"] == 0 and same["ci"] == (0.0, 0.0) and same["p_value"] == 1.0
    assert paired_difference([1.0], [2.0])["p_value"] is None
    exact = paired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])  # 3 pairs: 8 sign patterns, 2 as extreme
    assert exact["p_value"] == 0.25 and exact["p_value_method"] == "exact"
    assert planted["p_value_method"] == "monte carlo" and planted["p_value"] >= 1 / 10_001
