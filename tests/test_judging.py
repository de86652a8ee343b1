"""Reading a judge's answers (bench_lib.judging): hostile text is a format problem of that answer, never an
exception that fails the judge's whole batch."""

import pytest

from bench_lib.judging import AnswerFormatError, ScoreJSON, parse_answer
from bench_lib.protocols.base import ZERO_TO_TEN, Question

QUESTIONS = [Question("instruction", ZERO_TO_TEN, "How well?")]
DEEP = "[" * 5000 + "]" * 5000  # past Python's recursion limit when decoded


@pytest.mark.parametrize("text", [
    "thinking " + "{" * 5000 + "}" * 5000,
    '{"instruction": ' + DEEP + "}",
])
def test_an_answer_nested_too_deeply_does_not_parse_and_raises_nothing_else(text):
    """A judge (a server, a broken model) writing thousands of brackets made the JSON decoder raise RecursionError
    out of the parser: the whole batch of that call failed as if the judge had crashed."""
    try:
        parse_answer(text, QUESTIONS)
    except AnswerFormatError:
        return
    pytest.fail("a deeply nested answer parsed")


def test_the_benchmarks_own_format_reads_a_deep_answer_as_unparsed():
    with pytest.raises(AnswerFormatError, match="nested too deeply"):
        ScoreJSON().parse('{"score": ' + DEEP + "}", QUESTIONS)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400, "1" + "0" * 5000])
def test_an_answer_that_is_not_a_finite_number_of_readable_size_is_unparsed_not_an_error(value):
    """JSON's NaN and Infinity (Python's reader takes them), and integers too long to compare with a float or to
    read at all (Python's limit on integer digits), are no answer on a scale: unparsed, so the judge is asked again
    and the answer counts as any unparsed one, instead of an exception failing the judge's whole batch."""
    question = Question("instruction_following", ZERO_TO_TEN, "")
    with pytest.raises(AnswerFormatError):
        ScoreJSON().parse(f'{{"score": {value}, "reasoning": "x"}}', [question])
    with pytest.raises(AnswerFormatError):
        parse_answer(f'Fine. {{"instruction_following": {value}}}', [question])
