"""The judge contract: what a judge backend is shown and asked (`JudgeRequest`), how it answers (`Completion` in
generate mode, `Reading` in logits mode) and what a sample's judgement is (`Judgement`). A backend is a transport
(bench_lib.backends.Judge): it never sees a protocol. The protocol turns a sample into requests, one per view;
bench_lib.judges.policy asks the backend, parses, asks again where needed and assembles the judgements, the same
way for every backend.

An `AnswerFormat` says how an answer is asked for and read: the instruction after the content in generate mode
(and its strict form for the re-ask), the parse of the written answer, the text of each question in logits mode
and, optionally, the start of the assistant's reply after which a scale's answer token is read. The project's own
format is `RATIONALE_THEN_JSON`; a benchmark's verbatim format is another `AnswerFormat`, read in logits mode along
its `reply_layout` (the text up to each score supplied, or generated where free text comes first).

Imports no other module of the harness and no model library.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

# --- scales and questions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """An answer scale: its values (what each answer means) and the answers the judge writes for them."""

    name: str
    values: tuple[float, ...]
    answers: tuple[str, ...]  # what the judge writes for each value, in the same order
    placeholder: str  # how the JSON template shows it, e.g. "<integer 0-10>"
    instruction: str  # logits mode: the answer format asked for after the question
    strict_instruction: str  # the re-ask's

    @property
    def low(self) -> float:
        return self.values[0]

    @property
    def high(self) -> float:
        return self.values[-1]


ZERO_TO_TEN = Scale("0-10", tuple(float(v) for v in range(11)), tuple(str(v) for v in range(11)), "<integer 0-10>",
                    "Answer with a single integer from 0 to 10 and nothing else.",
                    "Your reply must be exactly one integer from 0 to 10, for example 7: no words, no punctuation, "
                    "no explanation.")
ONE_TO_FIVE = Scale("1-5", (1.0, 2.0, 3.0, 4.0, 5.0), ("1", "2", "3", "4", "5"), "<integer 1-5>",
                    "Answer with a single integer from 1 to 5 and nothing else.",
                    "Your reply must be exactly one integer from 1 to 5, for example 4: no words, no punctuation, "
                    "no explanation.")
ZERO_OR_ONE = Scale("0-1", (0.0, 1.0), ("0", "1"), "<0 or 1>", "Answer with a single digit, 0 or 1, and nothing else.",
                    "Your reply must be exactly one digit, 0 or 1: no words, no punctuation, no explanation.")
YES_NO = Scale("yes-no", (0.0, 1.0), ("no", "yes"), '<"yes" or "no">', "Answer with yes or no and nothing else.",
               "Your reply must be exactly one word, yes or no: no punctuation, no explanation.")


@dataclass(frozen=True)
class Question:
    name: str  # the answer's key (in the JSON answer, the records and the rows)
    scale: Scale
    text: str


# --- what the judge is shown ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: Any  # a PIL image


Part = Union[TextPart, ImagePart]


@dataclass(frozen=True)
class Prompt:
    """Everything one generation sees: a system prompt (or None), the user turn's parts, in order, and optionally
    the start of the assistant's reply, which the judge continues (its completion is only the new text)."""

    system: Optional[str]
    content: tuple[Part, ...]
    reply: Optional[str] = None

    def images(self) -> list[Any]:
        return [part.image for part in self.content if isinstance(part, ImagePart)]


@dataclass(frozen=True)
class ScalePrompt:
    """Logits mode: the text asked after a request's content (a question and its answer format), the scale whose
    answer is read from the next token, and optionally the start of the assistant's reply the answer follows (a
    benchmark's format written up to its score; None: the answer is the reply's first token)."""

    text: str
    scale: Scale
    reply_prefix: Optional[str] = None
    replies: Optional[tuple[str, ...]] = None  # per request (in `read_scales` order): its own reply prefix


class JudgeUnavailable(RuntimeError):
    """A judge backend could not get an answer for good (a judge server's request failed after its retries): the
    sample is judge_failed with this message, and the judge stage logs it in one line, without a traceback."""


class JudgeBudgetReached(Exception):
    """A judge backend's request budget is spent: the judge stage stops on every rank, the run writes the report of
    what was judged and exits 1 (a rerun continues with what is left)."""


class AnswerFormatError(ValueError):
    """A generated answer that does not follow the answer format."""


class AnswerFormat(ABC):
    """How answers are asked for and read. Instances are compared and hashed (requests with equal formats are
    asked together), so a subclass is a frozen dataclass or keeps the default identity."""

    @abstractmethod
    def instruction(self, questions: Sequence[Question], *, strict: bool = False) -> str:
        """Generate mode: the text after the content that asks for every question's answer (`strict`: the re-ask
        of an answer that did not parse)."""

    @abstractmethod
    def parse(self, text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
        """A written answer: ({question: value on its scale}, rationale). Raise `AnswerFormatError` when it does not
        follow the format (never guess a value)."""

    @abstractmethod
    def scale_prompt(self, question: Question, *, strict: bool = False) -> ScalePrompt:
        """Logits mode: what is asked after the content to read `question`'s answer from the next token."""

    def reply_layout(self, questions: Sequence[Question]) -> Optional[tuple[Segment, ...]]:
        """Logits mode: None: each question is asked with `scale_prompt`; else the reply, segment by segment, along
        which the answers are read (`VerbatimFormat`). A ValueError: the format cannot be read in logits mode."""
        return None


GENERATE_FORMAT = ("First write a short rationale, at most three sentences: what changed, and whether it is the "
                   "correct result. Then, on the last line, write only this JSON object: {template}")
STRICT_GENERATE_FORMAT = "Reply with only this JSON object and no other text: {template}"


@dataclass(frozen=True)
class RationaleThenJSON(AnswerFormat):
    """The project's format. Generate mode: a short rationale, then one JSON object with every question's answer
    (see `parse_answer`). Logits mode: the question, then its scale's instruction; the answer is the reply's first
    token."""

    def instruction(self, questions: Sequence[Question], *, strict: bool = False) -> str:
        return (STRICT_GENERATE_FORMAT if strict else GENERATE_FORMAT).format(template=json_template(questions))

    def parse(self, text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
        return parse_answer(text, questions)

    def scale_prompt(self, question: Question, *, strict: bool = False) -> ScalePrompt:
        instruction = question.scale.strict_instruction if strict else question.scale.instruction
        return ScalePrompt(f"{question.text} {instruction}", question.scale)


RATIONALE_THEN_JSON = RationaleThenJSON()


def json_template(questions: Sequence[Question]) -> str:
    return "{" + ", ".join(f'"{q.name}": {q.scale.placeholder}' for q in questions) + "}"


def parse_answer(text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
    """Strictly parse a generate-mode answer: ({question: value}, rationale).

    The answer must end with one JSON object (a closing code fence after it is allowed) whose keys are exactly
    the questions' names and whose values are answers on their scales: integers in range (7.5, "7" and 11 fail),
    "yes"/"no" for a yes/no question. The text before the object is the rationale. Ambiguous answers fail too: a
    key given twice (JSON keeps the last), or another JSON object holding any of the questions' names before the
    last one (two answers: which one is meant?).
    """
    body = text.strip()
    if body.endswith("```"):
        body = body[:-3].rstrip()
    if not body.endswith("}"):
        raise AnswerFormatError("the answer does not end with a JSON object")
    decoder = json.JSONDecoder(object_pairs_hook=_Pairs)
    start = body.rfind("{")
    value = None
    while start != -1:  # the last "{" from which a JSON value runs exactly to the end
        try:
            candidate, end = decoder.raw_decode(body, start)
            if end == len(body):
                value = candidate
                break
        except (ValueError, RecursionError):  # nested too deeply, or a number too long, to be an answer
            pass
        start = body.rfind("{", 0, start)
    if not isinstance(value, dict):
        raise AnswerFormatError("the answer does not end with a valid JSON object")
    if value.repeated:
        raise AnswerFormatError(f"the JSON object gives a key more than once: {', '.join(value.repeated)}")
    names = [q.name for q in questions]
    if _answer_objects(body[:start], names):
        raise AnswerFormatError("the answer holds two answers (JSON objects with the questions' keys)")
    if sorted(value) != sorted(names):
        raise AnswerFormatError(f"the JSON object has keys {sorted(value)}, expected exactly {sorted(names)}")
    answers = {}
    for q in questions:
        v = value[q.name]
        if q.scale is YES_NO:
            if not isinstance(v, str) or v.strip().lower() not in ("yes", "no"):
                raise AnswerFormatError(f"{q.name} is {v!r}, not yes or no")
            answers[q.name] = 1.0 if v.strip().lower() == "yes" else 0.0
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not q.scale.low <= v <= q.scale.high:
            raise AnswerFormatError(f"{q.name} is {v!r}, not an integer from {q.scale.low:g} to {q.scale.high:g}")
        answers[q.name] = float(v)
    rationale = body[:start].strip()
    if rationale.endswith("```json") or rationale.endswith("```"):
        rationale = rationale.rsplit("```", 1)[0].rstrip()
    return answers, rationale


class _Pairs(dict):
    """A decoded JSON object that remembers the keys it was given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        keys = [key for key, _ in pairs]
        self.repeated = sorted({key for key in keys if keys.count(key) > 1})


def _answer_objects(text: str, names: list[str]) -> bool:
    """Whether `text` holds a JSON object with any of the questions' names as keys."""
    decoder = json.JSONDecoder(object_pairs_hook=_Pairs)
    start = text.find("{")
    while start != -1:
        try:
            candidate, _ = decoder.raw_decode(text, start)
            if isinstance(candidate, dict) and set(candidate) & set(names):
                return True
        except (ValueError, RecursionError):  # JSONDecodeError, or a number too long to read
            pass
        start = text.find("{", start + 1)
    return False


# --- a benchmark's own answer formats (its verbatim prompt asks for them) ---------------------------------


def _integer_on(value: Any, question: Question) -> float:
    """A JSON value as an answer on `question`'s scale: "yes"/"no" (any case) for a yes/no question, else a whole
    number in the scale's range (7.0 is 7; 7.5, "7", 11, NaN and Infinity fail)."""
    if question.scale is YES_NO:
        if not isinstance(value, str) or value.strip().lower() not in ("yes", "no"):
            raise AnswerFormatError(f"{question.name} is {value!r}, not yes or no")
        return 1.0 if value.strip().lower() == "yes" else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not question.scale.low <= value <= question.scale.high or value != int(value):  # NaN: out of range
        raise AnswerFormatError(f"{question.name} is {value!r}, not an integer from {question.scale.low:g} to "
                                f"{question.scale.high:g}")
    return float(int(value))  # -0.0 is 0


def _json_object(text: str, delimiter: Optional[str] = None) -> dict:
    """The JSON object of an answer: between the two `delimiter`s when the answer has exactly two, else from its
    first "{" to its last "}" (line breaks inside dropped, as the benchmarks' own readers do)."""
    if delimiter and text.count(delimiter) == 2:
        body = text[text.find(delimiter) + len(delimiter):text.rfind(delimiter)]
    else:
        start, end = text.find("{"), text.rfind("}")
        if start == -1 or end < start:
            raise AnswerFormatError("the answer holds no JSON object")
        body = text[start:end + 1]
    try:
        value = json.loads(body.strip().replace("\n", ""), object_pairs_hook=_Pairs)
    except json.JSONDecodeError as err:
        raise AnswerFormatError(f"the answer's JSON object does not parse: {err.msg}") from None
    except ValueError as err:  # a number too long to read (Python's limit on integer digits)
        raise AnswerFormatError(f"the answer's JSON object does not parse: {err}") from None
    except RecursionError:
        raise AnswerFormatError("the answer's JSON object is nested too deeply") from None
    if not isinstance(value, dict):
        raise AnswerFormatError("the answer's JSON is not an object")
    if value.repeated:
        raise AnswerFormatError(f"the JSON object gives a key more than once: {', '.join(value.repeated)}")
    return value


@dataclass(frozen=True)
class Supplied:
    """Reply layout: text the harness writes into the judge's reply as it is."""

    text: str


@dataclass(frozen=True)
class Written:
    """Reply layout: free text the judge writes itself (greedily) before a score, up to `marker`, the text that
    introduces the score. The reply keeps what the judge wrote up to the end of the marker's first occurrence;
    where the judge never writes the marker (its answer ends, or reaches `judge_max_new_tokens`, first), the reply
    keeps all it wrote, then `fallback` is supplied (the marker on a new line).

    With `answered` (a format whose marker may also be mentioned in free text, as RISEBench's "final score"), an
    occurrence counts only where the format's reader would take it: followed by an answer (`answered` matches
    right after it), or at the end of the judge's text (its number cut off); the first such one is kept."""

    marker: str
    fallback: str
    # the marker as judges write it (spacing, quotes, case), a regular expression; "" = the marker exactly
    pattern: str = field(default="", compare=False)
    # what follows an occurrence that introduces the answer, a regular expression; "" = every occurrence does
    answered: str = field(default="", compare=False)

    def through(self, text: str) -> str:
        for found in re.finditer(self.pattern or re.escape(self.marker), text):
            rest = text[found.end():]
            if not self.answered or re.match(self.answered, rest) or re.fullmatch(r"[\s*:]*", rest):
                return text[:found.end()]
        return text.rstrip() + self.fallback


@dataclass(frozen=True)
class Slot:
    """Reply layout: where question `question`'s answer is read (the scale's tokens, at the next position)."""

    question: str


Segment = Union[Supplied, Written, Slot]


def written_answer(scale: Scale, distribution: Sequence[float]) -> str:
    """The answer a reply continues with after a value was read: the scale's answer of highest probability (the
    lower value on a tie; the lowest when the distribution is not finite)."""
    best = 0
    for k, p in enumerate(distribution):
        if p == p and p > distribution[best]:  # p == p: not NaN
            best = k
    return scale.answers[best]


class VerbatimFormat(AnswerFormat):
    """A benchmark's own answer format, asked for by its verbatim prompt: generate mode adds no instruction (the
    re-ask repeats the same prompt, as a benchmark that retries does).

    Logits mode reads it along `reply_layout`: the judge's reply is built from the start, segment by segment. Text
    the format fixes before a score is supplied (a JSON's opening up to the score's value); free text the format
    puts before a score is generated greedily up to the score's marker (`Written`); at each score the
    distribution over the scale's answer tokens is read (its expected value is the answer). With several values
    in one answer, each is read in turn: after a value is read, the reply continues with the scale's answer of
    highest probability (`written_answer`) and the format's separator up to the next value. The reply supplied
    before each value is recorded (`Judgement.reply_prefixes`, the judge-input log). There is no strict form to
    ask again with: a reading off the scale (`judge_min_digit_mass`) fails the sample at once."""

    def instruction(self, questions: Sequence[Question], *, strict: bool = False) -> str:
        return ""

    def scale_prompt(self, question: Question, *, strict: bool = False) -> ScalePrompt:
        raise ValueError(f"{type(self).__name__} is read along its reply layout in logits mode")

    def reply_layout(self, questions: Sequence[Question]) -> tuple[Segment, ...]:
        raise ValueError(f"{type(self).__name__} has no reply layout for logits mode")


def _opening(question: Question) -> str:
    """What a JSON value starts with before its answer token: a quote for a yes/no string, nothing for a number."""
    return '"' if question.scale is YES_NO else ""


def _closing(question: Question) -> str:
    return _opening(question)


@dataclass(frozen=True)
class ScoreJSON(VerbatimFormat):
    """A JSON object whose key `score` holds the answer (one question) or a list of answers (the questions in
    order), with an optional `reasoning`: RE-Edit's `{"score": "yes"|"no"|N|[N, N], "reasoning": ...}` and
    VIEScore's `{"score": [N, N], "reasoning": ...}` (between two `delimiter`s when the answer has them; a single
    value counts as a list of one)."""

    delimiter: Optional[str] = None
    wrap_single: bool = False  # VIEScore: a bare value is a list of one

    def parse(self, text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
        value = _json_object(text, self.delimiter)
        if "score" not in value:
            raise AnswerFormatError(f"the JSON object has no \"score\" (keys {sorted(value)})")
        score = value["score"]
        if len(questions) == 1 and not (self.wrap_single and isinstance(score, list)):
            scores = [score]
        else:
            scores = score if isinstance(score, list) else ([score] if self.wrap_single else None)
            if scores is None or len(scores) != len(questions):
                raise AnswerFormatError(f"score is {score!r}, expected a list of {len(questions)} values")
        answers = {q.name: _integer_on(v, q) for q, v in zip(questions, scores)}
        reasoning = value.get("reasoning", "")
        return answers, reasoning if isinstance(reasoning, str) else json.dumps(reasoning)

    def reply_layout(self, questions: Sequence[Question]) -> tuple[Segment, ...]:
        """`{"score": ` then the value (one question; a quote first for yes/no), or `{"score": [` then the values
        separated by ", " (several questions, or `wrap_single`): the score comes first, nothing is generated."""
        if len(questions) == 1 and not self.wrap_single:
            return (Supplied('{"score": ' + _opening(questions[0])), Slot(questions[0].name))
        segments: list[Segment] = [Supplied('{"score": [')]
        for k, q in enumerate(questions):
            segments += [Supplied((_closing(questions[k - 1]) + ", " if k else "") + _opening(q)), Slot(q.name)]
        return tuple(s for s in segments if not (isinstance(s, Supplied) and not s.text))


@dataclass(frozen=True)
class NamedScoresJSON(VerbatimFormat):
    """A JSON object with one key per question (`keys`: question name -> the benchmark's key), e.g. KRIS-Bench's
    `consistency_score`; other keys (its reasoning) are the rationale."""

    keys: tuple[tuple[str, str], ...]
    # logits mode: the JSON's keys in the order the view's prompt asks for them (its answer keys and its free-text
    # keys, e.g. ("reasoning", "consistency_score")); () : no layout, the view is judged in generate mode only
    order: tuple[str, ...] = ()

    def parse(self, text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
        value = _json_object(text)
        keys = dict(self.keys)
        answers = {}
        for q in questions:
            key = keys[q.name]
            if key not in value:
                raise AnswerFormatError(f"the JSON object has no {key!r} (keys {sorted(value)})")
            answers[q.name] = _integer_on(value[key], q)
        rest = {k: v for k, v in value.items() if k not in keys.values()}
        return answers, " ".join(str(v) for v in rest.values())

    def reply_layout(self, questions: Sequence[Question]) -> tuple[Segment, ...]:
        """The JSON's keys in `order`: a score key at the start is supplied (`{"instruction_score": `); a score
        key after a free-text key (or after text the prompt asks for before the JSON) is reached by the judge
        writing up to the key (`Written`), then " " is supplied. After a value: ", " and the next key, or "," and
        the judge's own text up to the next score key."""
        keys = dict(self.keys)
        wanted = [keys[q.name] for q in questions]
        if not self.order or any(key not in self.order for key in wanted):
            raise ValueError(f"no key order for {wanted} in logits mode")
        by_key = {keys[q.name]: q for q in questions}
        segments: list[Segment] = []
        opened = free = False  # the JSON's "{" supplied; free text to come before the next value
        last = ""  # what closes the last value read (a yes/no string's quote)
        for key in self.order:
            if key not in by_key:
                free = True
                continue
            q = by_key[key]
            if free:
                marker = f'"{key}":'
                segments += [*([Supplied(last + ",")] if opened else []),
                             Written(marker, "\n" + marker, rf"""["']{re.escape(key)}["']\s*:"""),
                             Supplied(" " + _opening(q))]
            else:
                segments.append(Supplied((last + ", " if opened else "{") + f'"{key}": ' + _opening(q)))
            segments.append(Slot(q.name))
            opened, free, last = True, False, _closing(q)
        return tuple(segments)


# gpt_eval.py `extract`: the first "Final Score" label followed by digits, else the first "Final Scores" one
FINAL_SCORE = re.compile(r"\*?\*?Final Score\*?\*?:?\s*([\d*\s,\n]*)", re.IGNORECASE)
FINAL_SCORES = re.compile(r"\*?\*?Final Scores\*?\*?:?\s*([\d*\s,\n]*)", re.IGNORECASE)
# logits mode: what follows a "Final Score(s)" label the reader takes (its digits, after markup and a colon)
FINAL_SCORE_ANSWERED = r"s?\*?\*?:?\s*[*\s,]*\d"


@dataclass(frozen=True)
class FinalScoreLine(VerbatimFormat):
    """RISEBench's answer: free text that ends with a final-score line; the score is the integer written after
    the first "Final Score" label that is followed by digits (gpt_eval.py `extract`); exactly one integer on the
    question's scale, else unparsed."""

    def parse(self, text: str, questions: Sequence[Question]) -> tuple[dict[str, float], str]:
        if len(questions) != 1:
            raise ValueError("a final-score line answers one question")
        for label in (FINAL_SCORE, FINAL_SCORES):
            for match in label.finditer(text):
                numbers = re.findall(r"\d+", match.group(1))
                if numbers:
                    if len(numbers) != 1:
                        raise AnswerFormatError(f"the final score line holds {len(numbers)} numbers: {numbers}")
                    return ({questions[0].name: _integer_on(int(numbers[0]), questions[0])},
                            text[:match.start()].strip())
        raise AnswerFormatError("the answer has no final score line")

    def reply_layout(self, questions: Sequence[Question]) -> tuple[Segment, ...]:
        """The judge writes its reasoning up to its final-score line's label (`Written`: the first "Final Score"
        followed by digits, as `parse` reads it, or one its text ends with; a mention of the final score in its
        reasoning is not the line; where there is no line, a new paragraph "**Final Score" is supplied after its
        text), then ":** **" is supplied and the score read."""
        if len(questions) != 1:
            raise ValueError("a final-score line answers one question")
        return (Written("Final Score", "\n\n**Final Score", r"(?i)final\s+scores?", r"(?i)" + FINAL_SCORE_ANSWERED),
                Supplied(":** **"), Slot(questions[0].name))


# --- requests and answers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeRequest:
    """One view of one sample: everything the judge is shown and asked about it."""

    view: str  # the protocol's name for the view
    system: Optional[str]  # a system prompt, or None
    content: tuple[Part, ...]  # what the user turn shows, in order: labelled images, then the view's text
    questions: tuple[Question, ...]
    answer_format: AnswerFormat = RATIONALE_THEN_JSON

    def prompt(self, text: str, reply: Optional[str] = None) -> Prompt:
        """The request with `text` (an instruction or a question) after its content; "" adds nothing (a benchmark's
        verbatim prompt already asks for its answer format). `reply`: the start of the judge's reply."""
        return Prompt(self.system, (*self.content, TextPart(text)) if text else self.content, reply or None)

    def images(self) -> list[Any]:
        return [part.image for part in self.content if isinstance(part, ImagePart)]

    def batch_key(self) -> tuple:
        """Requests with equal keys are asked together (in logits mode: their questions on one shared prefill)."""
        return (self.view, self.system, self.answer_format,
                tuple((q.name, q.text, q.scale.name) for q in self.questions))


@dataclass(frozen=True)
class Completion:
    """Generate mode: one prompt's new text (only the generated tokens), with its token counts where known."""

    text: str
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None


@dataclass(frozen=True)
class Reading:
    """Logits mode: one question's answer read from the next-token distribution. `mass`: the probability the judge
    put on the scale's answers at all; `distribution`: over the scale's values, renormalised; `value`: its
    expected value. `instead()`: what the judge wanted to say instead (kept as the raw answer when the reading is
    off-format; computed only then)."""

    value: float
    distribution: list[float]
    mass: float
    instead: Callable[[], str] = field(default=lambda: "", repr=False, compare=False)
    prompt_tokens: Optional[int] = None  # what the reading was charged, where the backend knows (a judge server)
    completion_tokens: Optional[int] = None


class ScaleReader(ABC):
    """Logits mode: reads the answers of one batch of requests that share their questions (equal `batch_key`), one
    question at a time. A backend may prepare what the questions share once (the Qwen backend prefills the
    requests' content and asks every question on that cache); the policy asks each question, then once more, in
    its strict form, for the rows whose reading was off-format. Use it as a context manager: `close` frees what
    it holds."""

    @abstractmethod
    def read(self, prompt: ScalePrompt, rows: Sequence[int]) -> list[Optional[Reading]]:
        """Per request (in the order given to `read_scales`), its reading of `prompt`: a `Reading` for every index
        in `rows`; None, or a reading, for the others (a backend that reads a whole batch at once may give all)."""

    def close(self) -> None:
        """Free what the reader holds (a KV cache)."""

    def __enter__(self) -> ScaleReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Judgement:
    """One sample's judgement. `answers` is None exactly when `error` says why the judgement failed."""

    answers: Optional[dict[str, float]] = None  # question -> value (the expected value in logits mode)
    distributions: Optional[dict[str, list[float]]] = None  # question -> P(each value of its scale)
    error: Optional[str] = None
    parse: Optional[str] = "ok"  # ok | reasked (first answer unparsed, second parsed) | failed; None: NaN logits
    raw: list[str] = field(default_factory=list)  # the answers that did not parse, in order
    rationale: Optional[str] = None  # generate mode
    digit_mass: Optional[dict[str, float]] = None  # logits mode: P(answering on the question's scale at all)
    tokens: Optional[dict[str, int]] = None  # {"prompt": n, "completion": m} over every request, where known
    # logits mode along a reply layout: question -> the start of the reply its answer was read after
    reply_prefixes: Optional[dict[str, str]] = None
    partial_answers: Optional[dict[str, float]] = None  # a failed judgement: the answers that did parse
    partial_distributions: Optional[dict[str, list[float]]] = None  # ... and their distributions
