"""`risebench`: RISEBench's protocol (PhoenixZ810/RISEBench `gpt_eval.py`: `eval_vanilla`, `calculate_score`,
`calculate_completion`, `main`; criteria in `utils.py`).

Three dimensions, 1-5 each, per category (dimension) `temporal`, `causal`, `spatial`, `logical`:
- reasoning: does the edited image match the reference (text, or image). temporal/causal: the edited image
  alone with the reference text (with the source too when the sample's `reasoning_img` is set); spatial: the
  reference image and the edit when there is a reference image, else as temporal; logical: a 0/1 judgement
  (the edited image with the reference answer text, or the reference image and the edit), mapped 0 -> 1,
  1 -> 5;
- appearance consistency: the source (spatial and logical with a reference image: the reference image) and the
  edit; logical: 0/1 as above; left out for samples marked `consistency_free`;
- visual plausibility: the edited image alone; not for logical.
Score: 0.3 C + 0.5 R + 0.2 P (consistency-free: 0.8 R + 0.2 P; logical: 0.3 C + 0.7 R), halved (at least 1)
when R = 1. Accuracy: 1 when every applicable dimension is 5. Reported means pool the samples; the dimensions
are also shown as 25 (mean - 1) %, the headline is Accuracy % per category and overall.

In logits mode the answers are distributions: the linear parts use expected values, "R = 1" is taken with
its probability (the score is halved in expectation), and accuracy is P(every applicable dimension at 5)
with the questions independent. A judgement that does not parse is judge_failed and enters no mean; with
`failure_policy: reference` it counts 0 in accuracy and stays out of the score, as in gpt_eval.py.
"""

from __future__ import annotations

from typing import Any, Optional

from ..judging import FinalScoreLine
from ..metrics import NO_VALUE, Label, Table
from .base import ONE_TO_FIVE, ZERO_OR_ONE, Answer, Ask, Metric, Protocol, Question, SampleView, register_protocol

REASONING = (
    "You judge whether an edited image shows the correct outcome of a reasoning task.\n\n"
    "Instruction given to the editor: {instruction}\n"
    "What a correct result shows: {reference}\n\n"
    "{shown}Score from 1 to 5 how well the edited image matches the correct result: 5 = it shows the correct "
    "outcome completely; 4 = correct with a small deviation; 3 = partly correct; 2 = mostly wrong, with a trace of "
    "the right idea; 1 = wrong or no change toward the correct outcome.\n\n")
REASONING_WITH_IMAGE = (
    "You judge whether an edited image shows the correct outcome of a reasoning task.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "The first image is a reference of the correct result, the second is the edited image. Score from 1 to 5 how "
    "well the edited image matches the reference in everything the task is about: 5 = it matches completely; "
    "4 = it matches with a small deviation; 3 = partly; 2 = mostly not; 1 = not at all.\n\n")
CONSISTENCY = (
    "You judge whether an image edit left alone what it should not change.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "The first image is {before}, the second is the edited image. Ignoring every change the instruction asks "
    "for, score from 1 to 5 how much of the rest was preserved: 5 = nothing else changed; 4 = one minor "
    "difference; 3 = one significant difference; 2 = two or more significant differences; 1 = nearly everything "
    "changed.{spatial}\n\n")
PLAUSIBILITY = (
    "You judge one generated image on its own.\n\n"
    "Score from 1 to 5 its visual plausibility: is it realistic, clear and physically coherent, free of "
    "distortions and artifacts? 5 = fully plausible; 3 = noticeable flaws; 1 = implausible or broken.{spatial}\n\n")
SPATIAL_CONSISTENCY = " For an arrangement or assembly task, the parts themselves should stay the same objects."
SPATIAL_PLAUSIBILITY = " Judge clarity and distortion; a rendered 3D look is not a flaw."
LOGICAL_REASONING = (
    "You check the answer to a visual puzzle.\n\n"
    "Task given to the editor: {instruction}\n"
    "{reference_line}\n"
    "{shown}Answer 1 if the edited image shows the correct answer (and nothing that contradicts it), 0 otherwise. "
    "Ignore any watermark.\n\n")
LOGICAL_CONSISTENCY = (
    "You check that a puzzle's answer was drawn without disturbing the puzzle.\n\n"
    "Task given to the editor: {instruction}\n"
    "{reference_line}\n"
    "The first image is {before}, the second is the edited image. Answer 1 if everything except the drawn answer "
    "is unchanged, 0 if anything else changed (extra marks count as changes). Ignore any watermark.\n\n")
QUESTIONS = {
    "reasoning": "Rate how well the edited image shows the correct result.",
    "consistency": "Rate how well everything else was preserved.",
    "plausibility": "Rate the visual plausibility of the edited image.",
}
DIMENSIONS = ("temporal", "causal", "spatial", "logical")


def _flag(sample: SampleView, name: str) -> bool:
    """RISEBench treats a field as set when it is present and not null (gpt_eval.py after commit ce8cba3)."""
    value = sample.fields.get(name)
    return value is not None and value != ""


# With `judge_prompts` (RISEBench's utils.py), the module's constants as gpt_eval.py eval_vanilla picks and fills
# them (str.format with instruct= and reference= where it calls format), each sent as its text, then its images.
VERBATIM = ("prompt_consist", "prompt_reasoning", "prompt_reasoning_w_input", "prompt_generation",
            "prompt_spatial_ref", "prompt_spatial_ref_img", "prompt_spatial_ref_w_input", "prompt_spatial_qual",
            "prompt_spatial_cons", "prompt_logical_cons_ans", "prompt_logical_cons", "prompt_logical_txt",
            "prompt_logical_img", "prompt_logical_img_wo_q")


@register_protocol("risebench")
class RISEBenchProtocol(Protocol):
    """RISEBench: reasoning, appearance consistency and visual plausibility, 1-5, and accuracy."""

    prompt_file_member = "utils.py"
    image_rule = "long_side:768"  # gpt_eval.py gpt_generate(image_size=768): PIL thumbnail to 768 x 768

    def verbatim_names(self) -> list[str]:
        return list(VERBATIM)

    def verbatim_asks(self, sample: SampleView, images: dict[str, Any], dim: str) -> list[Ask]:
        """gpt_eval.py eval_vanilla: which of RISEBench's texts each view sends, with which images."""
        v, fmt = self.verbatim, FinalScoreLine()
        source, edited, reference = images["source"], images["edited"], images.get("reference")
        fill = {"instruct": sample.instruction, "reference": sample.reference_text or ""}

        def ask(view, text, shown, scale):
            return Ask(view, tuple(("", image) for image in shown), text, (Question(view, scale, QUESTIONS[view]),),
                       answer_format=fmt, text_first=True)

        if dim == "logical":
            if sample.has_reference_image:
                cons = v["prompt_logical_cons"].format(instruct=sample.instruction)
                rea = (v["prompt_logical_img_wo_q"] if _flag(sample, "reasoning_wo_ins")
                       else v["prompt_logical_img"].format(instruct=sample.instruction))
                asks = [ask("reasoning", rea, (reference, edited), ZERO_OR_ONE)]
                first = reference
            else:
                cons = v["prompt_logical_cons_ans"].format(**fill)
                asks = [ask("reasoning", v["prompt_logical_txt"].format(**fill), (edited,), ZERO_OR_ONE)]
                first = source
            if not _flag(sample, "consistency_free"):
                asks.insert(0, ask("consistency", cons, (first, edited), ZERO_OR_ONE))
            return asks
        first = source
        if dim == "spatial":
            if sample.has_reference_image:
                first = reference
                rea = ask("reasoning", v["prompt_spatial_ref_img"].format(instruct=sample.instruction),
                          (reference, edited), ONE_TO_FIVE)
            elif _flag(sample, "reasoning_img"):
                rea = ask("reasoning", v["prompt_spatial_ref_w_input"].format(**fill), (source, edited), ONE_TO_FIVE)
            else:
                rea = ask("reasoning", v["prompt_spatial_ref"].format(**fill), (edited,), ONE_TO_FIVE)
            cons, qua = v["prompt_spatial_cons"].format(instruct=sample.instruction), v["prompt_spatial_qual"]
        else:
            if _flag(sample, "reasoning_img"):
                rea = ask("reasoning", v["prompt_reasoning_w_input"].format(**fill), (source, edited), ONE_TO_FIVE)
            else:
                rea = ask("reasoning", v["prompt_reasoning"].format(**fill), (edited,), ONE_TO_FIVE)
            cons, qua = v["prompt_consist"].format(instruct=sample.instruction), v["prompt_generation"]
        asks = [] if _flag(sample, "consistency_free") else [ask("consistency", cons, (first, edited), ONE_TO_FIVE)]
        return [*asks, rea, ask("plausibility", qua, (edited,), ONE_TO_FIVE)]

    def failed_metrics(self, sample: SampleView) -> Optional[dict[str, Optional[float]]]:
        """gpt_eval.py: a sample whose answers did not all parse has no score (left out of the means) and counts
        0 in accuracy."""
        return {**{m.name: None for m in self.metrics}, "accuracy": 0.0}

    answer_names = tuple(QUESTIONS)
    metrics = (Metric("score", 1, 5, primary=True), Metric("accuracy", 0, 1, "{:.1%}"), Metric("reasoning", 1, 5),
               Metric("consistency", 1, 5), Metric("plausibility", 1, 5))
    dimensions = DIMENSIONS
    default_dimension = "temporal"
    category_defaults = {f"{d}_reasoning": d for d in DIMENSIONS}  # RISEBench's own category names

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        dim = sample.dimension if sample.dimension in DIMENSIONS else self.default_dimension
        if self.verbatim is not None:
            return self.verbatim_asks(sample, images, dim)
        source, edited, reference = images["source"], images["edited"], images.get("reference")
        with_reference_image = sample.has_reference_image and dim in ("spatial", "logical")
        first, before = ((reference, "the reference image of the correct result") if with_reference_image
                         else (source, "the original image"))
        fill = {"instruction": sample.instruction, "reference": sample.reference_text or "(none given)"}
        asks = []
        if dim == "logical":
            q = {n: Question(n, ZERO_OR_ONE, QUESTIONS[n]) for n in ("reasoning", "consistency")}
            line = ("" if with_reference_image else f"The correct answer: {sample.reference_text or '(none given)'}\n")
            if with_reference_image:
                shown = "The first image is the reference of the correct answer, the second the edited image. "
                images_r = (("Reference image:", reference), ("Edited image:", edited))
            else:
                shown, images_r = "The image is the edited image. ", (("Edited image:", edited),)
            asks.append(Ask("reasoning", images_r, LOGICAL_REASONING.format(**fill, reference_line=line, shown=shown),
                            (q["reasoning"],)))
            if not _flag(sample, "consistency_free"):
                asks.append(Ask("consistency", (("First image:", first), ("Edited image:", edited)),
                                LOGICAL_CONSISTENCY.format(**fill, reference_line=line, before=before),
                                (q["consistency"],)))
            return asks
        q = {n: Question(n, ONE_TO_FIVE, QUESTIONS[n]) for n in QUESTIONS}
        if with_reference_image:
            asks.append(Ask("reasoning", (("Reference image:", reference), ("Edited image:", edited)),
                            REASONING_WITH_IMAGE.format(**fill), (q["reasoning"],)))
        elif _flag(sample, "reasoning_img"):
            asks.append(Ask("reasoning", (("Original image:", source), ("Edited image:", edited)),
                            REASONING.format(**fill, shown="The first image is the original, the second the edited "
                                                           "image. "), (q["reasoning"],)))
        else:
            asks.append(Ask("reasoning", (("Edited image:", edited),),
                            REASONING.format(**fill, shown="The image is the edited image. "), (q["reasoning"],)))
        spatial = dim == "spatial"
        if not _flag(sample, "consistency_free"):
            asks.append(Ask("consistency", (("First image:", first), ("Edited image:", edited)),
                            CONSISTENCY.format(**fill, before=before, spatial=SPATIAL_CONSISTENCY if spatial else ""),
                            (q["consistency"],)))
        asks.append(Ask("plausibility", (("Edited image:", edited),),
                        PLAUSIBILITY.format(spatial=SPATIAL_PLAUSIBILITY if spatial else ""), (q["plausibility"],)))
        return asks

    def texts(self) -> list[str]:
        return [REASONING, REASONING_WITH_IMAGE, CONSISTENCY, PLAUSIBILITY, SPATIAL_CONSISTENCY, SPATIAL_PLAUSIBILITY,
                LOGICAL_REASONING, LOGICAL_CONSISTENCY, *QUESTIONS.values()]

    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        dim = sample.dimension if sample.dimension in DIMENSIONS else self.default_dimension
        # gpt_eval.py main: a logical 0/1 judgement b becomes 4 * min(b, 1) + 1 on the 1-5 scale.
        if dim == "logical":
            dims = {name: _binary_to_five(a) for name, a in answers.items()}
        else:
            dims = {name: (a.value, a.probability(5.0), a.probability(1.0)) for name, a in answers.items()}
        r, p_r5, p_r1 = dims["reasoning"]
        c = dims.get("consistency")
        p = dims.get("plausibility")
        # calculate_score: score = rest + weight * R, with the weights of the category; consistency-free samples
        # drop C (0.2 P + 0.8 R); logical has no P (0.3 C + 0.7 R).
        if dim == "logical":
            rest, weight = (0.3 * c[0], 0.7) if c else (0.0, 1.0)
        elif c is None:
            rest, weight = 0.2 * p[0], 0.8
        else:
            rest, weight = 0.3 * c[0] + 0.2 * p[0], 0.5
        # "if R == 1: score = max(1, 0.5 * score)", in expectation over R: the R = 1 part of E[score] is replaced
        # by its halved value. In generate mode P(R = 1) is 0 or 1, and this is the rule itself.
        at_one = rest + weight * 1.0
        score = rest + weight * r + p_r1 * (max(1.0, 0.5 * at_one) - at_one)
        # calculate_completion: every applicable dimension at its maximum.
        accuracy = p_r5
        for other in (c, p):
            if other is not None:
                accuracy *= other[1]
        return {"score": score, "accuracy": accuracy, "reasoning": r,
                "consistency": c[0] if c else None, "plausibility": p[0] if p else None}

    def report_extras(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, Any]:
        """RISEBench's per-subtask figures (gpt_eval.py groups by `subtask` when the data has it): each subtask's
        category and metrics."""
        def subtask(row):
            value = (row.get("extras") or {}).get("subtask")
            return None if value in (None, "") else str(value)

        names = sorted({s for r in rows if (s := subtask(r)) is not None})
        if not names:
            return {}
        return {"subtasks": {name: {"category": next(r["category"] for r in rows if subtask(r) == name),
                                    "metrics": self.aggregate([r for r in rows if subtask(r) == name])}
                             for name in names}}

    def headline(self, report: dict[str, Any]) -> list[Table]:
        """RISEBench's README tables: Accuracy per category (in its order: Temporal, Causal, Spatial, Logical; other
        categories after them) and overall; then the dimensions as 25 (mean - 1) %."""
        def order(category: str) -> tuple:
            dim = self.dimension_of(category, {})
            return (DIMENSIONS.index(dim) if dim else len(DIMENSIONS), category)

        rows = [*sorted(report["categories"].items(), key=lambda item: order(item[0])),
                (Label("overall"), report["overall"])]
        labels = tuple(label for label, _ in rows)
        accuracy = Table(("", *labels), (("Accuracy", *(self.metric("accuracy").format(s["metrics"].get("accuracy"))
                                                       for _, s in rows)),))
        percent = {"reasoning": "Instruction reasoning", "consistency": "Appearance consistency",
                   "plausibility": "Visual plausibility"}
        dimensions = [(label, *(_percent(s["metrics"].get(name)) for _, s in rows)) for name, label in percent.items()]
        dimensions.append(("Score (1-5)", *(self.metric("score").format(s["metrics"].get("score")) for _, s in rows)))
        tables = [accuracy, Table(("dimension (25 x (mean - 1) %)", *labels), tuple(dimensions))]
        if report.get("subtasks"):
            tables.append(Table(("subtask", "category", "Accuracy", "Score (1-5)", "n"), tuple(
                (name, stats["category"], self.metric("accuracy").format(stats["metrics"].get("accuracy")),
                 self.metric("score").format(stats["metrics"].get("score")), str(stats["metrics"]["accuracy"]["count"]))
                for name, stats in sorted(report["subtasks"].items(), key=lambda item: (order(item[1]["category"]),
                                                                                        item[0])))))
        return tables


def _binary_to_five(answer: Answer) -> tuple[float, float, float]:
    """(value on 1-5, P(5), P(1)) of a 0/1 answer mapped 0 -> 1, 1 -> 5."""
    p_one = answer.probability(1.0)
    return 1.0 + 4.0 * p_one, p_one, 1.0 - p_one


def _percent(stats: Optional[dict[str, Any]]) -> str:
    if not stats or stats["mean"] is None:
        return NO_VALUE
    text = f"{25 * (stats['mean'] - 1):.1f}"
    if stats["ci95"]:
        text += f" [{25 * (stats['ci95'][0] - 1):.1f}, {25 * (stats['ci95'][1] - 1):.1f}]"
    return text
