"""What every judge backend takes and gives: a `JudgeRequest` per sample, a `Judgement` back; the strict parse
of a generated answer; the chat messages an `Ask` (one view of a protocol) becomes. No model library is
imported here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..protocols.base import YES_NO, Ask, Question, SampleView

GENERATE_FORMAT = ("First write a short rationale, at most three sentences: what changed, and whether it is the "
                   "correct result. Then, on the last line, write only this JSON object: {template}")
STRICT_GENERATE_FORMAT = "Reply with only this JSON object and no other text: {template}"


@dataclass
class JudgeRequest:
    """One sample to judge: what the protocol knows of it, and its images ("source", "edited", "reference")."""

    sample: SampleView
    images: dict[str, Any]


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


class AnswerFormatError(ValueError):
    """A generated answer that does not end in the required JSON object."""


def json_template(questions: tuple[Question, ...]) -> str:
    return "{" + ", ".join(f'"{q.name}": {q.scale.placeholder}' for q in questions) + "}"


def parse_answer(text: str, questions: tuple[Question, ...]) -> tuple[dict[str, float], str]:
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
        except json.JSONDecodeError:
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
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return False


def build_messages(ask: Ask, question: str) -> list[dict]:
    """One user turn: the view's labelled images, its context text, then the question (the last item: logits
    mode shares everything before it between the view's questions)."""
    content: list[dict] = []
    for label, image in ask.images:
        content += [{"type": "text", "text": label}, {"type": "image", "image": image}]
    content += [{"type": "text", "text": ask.context}, {"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def ask_images(ask: Ask) -> list[Any]:
    return [image for _, image in ask.images]
