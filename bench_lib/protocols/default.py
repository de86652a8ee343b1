"""`default`: the harness's own protocol. One view (source, edited, and the reference image when there is
one; the category's rubric from `prompts_dir`), three 0-10 questions asked on it: instruction, consistency,
quality. `score` combines them with `score_formula` (default VIEScore's sqrt(min(I, C) * Q))."""

from __future__ import annotations

from typing import Any, Optional

from ..config import SUBSCORES
from ..scoring import combine
from .base import ZERO_TO_TEN, Answer, Ask, Metric, Protocol, Question, SampleView, register_protocol

QUESTIONS = {
    "instruction": "Rate INSTRUCTION only: does the EDITED image show the correct result, as the rubric above "
                   "defines it?",
    "consistency": "Rate CONSISTENCY only: is everything the instruction does not ask to change preserved?",
    "quality": "Rate QUALITY only: is the EDITED image, on its own, natural and free of artifacts?",
}


def labelled_images(images: dict[str, Any], *, reference: bool) -> tuple[tuple[str, Any], ...]:
    shown = (("Source image:", images["source"]), ("Edited image:", images["edited"]))
    return shown + ((("Reference image (a correct result):", images["reference"]),) if reference else ())


@register_protocol("default")
class DefaultProtocol(Protocol):
    """This harness's rubrics: instruction, consistency and quality, each 0-10, combined by `score_formula`."""

    answer_names = tuple(QUESTIONS)
    metrics = (Metric("score", 0, 10, primary=True), Metric("instruction", 0, 10), Metric("consistency", 0, 10),
               Metric("quality", 0, 10))
    category_defaults = {  # RE-Edit's and RISEBench's names for categories the rubrics cover
        "physical": "physics", "environmental": "environment", "cultural": "social",
        "causal_reasoning": "causal",
    }

    def known_dimensions(self) -> set[str]:
        return set(self.rubrics.templates)

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        context = self.rubrics.render_named(sample.dimension, sample.instruction, sample.reference_text,
                                            sample.has_reference_image).rstrip() + "\n\n"
        return [Ask("rubric", labelled_images(images, reference=sample.has_reference_image), context,
                    tuple(Question(name, ZERO_TO_TEN, QUESTIONS[name]) for name in SUBSCORES))]

    def headline(self, report: dict[str, Any]) -> list:
        return []  # the report's own table (score, I, C, Q per category) is this protocol's headline

    def texts(self) -> list[str]:
        return [*QUESTIONS.values(), *(self.rubrics.templates[n] for n in sorted(self.rubrics.templates))]

    def row_fields(self, sample: SampleView, metrics: Optional[dict[str, Optional[float]]]) -> dict[str, Any]:
        subscores = None if metrics is None else {name: metrics[name] for name in SUBSCORES}  # the metrics' own
        if not sample.category:  # an invalid_input row without a category was judged with no rubric
            return {"subscores": subscores, "rubric": None, "rubric_sha256": None}
        return {"subscores": subscores, "rubric": sample.dimension,
                "rubric_sha256": self.rubrics.sha256(sample.dimension)}

    def dimension_of(self, category: str, category_map: dict[str, str]) -> Optional[str]:
        return super().dimension_of(category, category_map) if category else None

    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        subscores = {name: answers[name].value for name in SUBSCORES}
        score = combine(subscores, self.judge_cfg.score_formula, self.judge_cfg.score_weights)
        return {"score": score, **subscores}
