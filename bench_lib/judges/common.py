"""What every judge backend takes and gives: a `JudgeRequest` per sample, a `Judgement` back; the strict
parse of a generated answer; the chat messages a request becomes. No model library is imported here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from PIL import Image

from ..config import SUBSCORES

# logits mode: one question per sub-score, asked after the rubric (they share its KV cache)
QUESTIONS = {
    "instruction": "Rate INSTRUCTION only: does the EDITED image show the correct result, as the rubric above "
                   "defines it?",
    "consistency": "Rate CONSISTENCY only: is everything the instruction does not ask to change preserved?",
    "quality": "Rate QUALITY only: is the EDITED image, on its own, natural and free of artifacts?",
}
ANSWER_FORMAT = "Answer with a single integer from 0 to 10 and nothing else."
STRICT_ANSWER_FORMAT = ("Your reply must be exactly one integer from 0 to 10, for example 7: no words, no "
                        "punctuation, no explanation.")
# generate mode
JSON_TEMPLATE = '{"instruction": <integer 0-10>, "consistency": <integer 0-10>, "quality": <integer 0-10>}'
GENERATE_FORMAT = ("First write a short rationale, at most three sentences: what changed, and whether it is the "
                   f"correct result. Then, on the last line, write only this JSON object: {JSON_TEMPLATE}")
STRICT_GENERATE_FORMAT = f"Reply with only this JSON object and no other text: {JSON_TEMPLATE}"


@dataclass
class JudgeRequest:
    category: str
    instruction: str
    source: Image.Image
    edited: Image.Image
    reference_text: Optional[str] = None
    reference_image: Optional[Image.Image] = None


@dataclass
class Judgement:
    """One sample's judgement. `subscores` is None exactly when `error` says why the judgement failed."""

    subscores: Optional[dict[str, float]] = None
    error: Optional[str] = None
    parse: Optional[str] = "ok"  # ok | reasked (first answer unparsed, second parsed) | failed; None: NaN logits
    raw: list[str] = field(default_factory=list)  # the answers that did not parse, in order
    rationale: Optional[str] = None  # generate mode
    digit_mass: Optional[dict[str, float]] = None  # logits mode: P(the answer is a digit) per sub-score


class AnswerFormatError(ValueError):
    """A generated answer that does not end in the required JSON object."""


def parse_answer(text: str) -> tuple[dict[str, int], str]:
    """Strictly parse a generate-mode answer: (sub-scores, rationale).

    The answer must end with one JSON object (a closing code fence after it is allowed) whose keys are exactly
    the sub-scores and whose values are integers from 0 to 10; the text before it is the rationale.
    """
    body = text.strip()
    if body.endswith("```"):
        body = body[:-3].rstrip()
    if not body.endswith("}"):
        raise AnswerFormatError("the answer does not end with a JSON object")
    decoder = json.JSONDecoder()
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
    if sorted(value) != sorted(SUBSCORES):
        raise AnswerFormatError(f"the JSON object has keys {sorted(value)}, expected exactly {sorted(SUBSCORES)}")
    for name in SUBSCORES:
        v = value[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
            raise AnswerFormatError(f"{name} is {v!r}, not an integer from 0 to 10")
    rationale = body[:start].strip()
    if rationale.endswith("```json") or rationale.endswith("```"):
        rationale = rationale.rsplit("```", 1)[0].rstrip()
    return {name: value[name] for name in SUBSCORES}, rationale


def accept(judgement: Judgement, text: str) -> None:
    """Fill a judgement from a generated answer, or raise AnswerFormatError (leaving it untouched)."""
    subscores, rationale = parse_answer(text)
    judgement.subscores = {k: float(v) for k, v in subscores.items()}
    judgement.rationale = rationale


def build_messages(request: JudgeRequest, rubric_text: str, question: str) -> list[dict]:
    """One user turn: the images, the rubric, then the question (the last item: logits mode shares everything
    before it between the sub-score questions)."""
    content = [
        {"type": "text", "text": "Source image:"},
        {"type": "image", "image": request.source},
        {"type": "text", "text": "Edited image:"},
        {"type": "image", "image": request.edited},
    ]
    if request.reference_image is not None:
        content += [{"type": "text", "text": "Reference image (a correct result):"},
                    {"type": "image", "image": request.reference_image}]
    content += [{"type": "text", "text": rubric_text.rstrip() + "\n\n"}, {"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def request_images(request: JudgeRequest) -> list[Image.Image]:
    images = [request.source, request.edited]
    return images + [request.reference_image] if request.reference_image is not None else images
