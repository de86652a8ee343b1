"""`kris`: KRIS-Bench's protocol (mercurystraw/Kris_Bench `metrics_common.py`, `metrics_view_change.py`,
`metrics_knowledge.py`; criteria in `ReasonEdit/prompts.py`; the 0-100 normalisation and the task groups as in
lmms-eval's KRIS-Bench task, which follows the official summary).

Four dimensions, 1-5 each:
- visual consistency: source and edit (only what the instruction does not ask to change);
- visual quality: the EDITED image alone;
- instruction following: source and edit (viewpoint_change: and the ground-truth view, the reference image);
- knowledge plausibility, for the knowledge tasks only: asked in the same view as instruction following, with
  the sample's explanation as the real-world knowledge the result must agree with; when instruction
  following is 2 or lower, knowledge plausibility is 1 (a rule of KRIS's prompt, applied here in code: in
  expectation over the instruction answer in logits mode).
A sample's score is the mean of its applicable dimensions. Means pool the samples and are reported on KRIS's
0-100 scale, 25 (mean - 1).

The task types (dimensions): `common` (count, colour, anomaly, position, size, part completion,
multi-instruction), `viewpoint`, `knowledge` (the ten knowledge tasks). KRIS's temporal-prediction and
multi-element tasks take several source images, which this harness's editors do not: their samples are
invalid_input (see the README).
"""

from __future__ import annotations

import string
from typing import Any, Optional

from ..config import ConfigError
from ..judging import NamedScoresJSON
from .base import ONE_TO_FIVE, Answer, Ask, Metric, Protocol, Question, SampleView, register_protocol

CONSISTENCY = (
    "You judge an image edit. The first image is the original, the second the edited result.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Score VISUAL CONSISTENCY from 1 to 5: leaving aside everything the instruction asks to change, how much of "
    "the original is kept (objects, people's identity, background, layout)? 5 = identical apart from the "
    "instructed change; 4 = one tiny unintended difference; 3 = one clear unintended change; 2 = two or more; "
    "1 = most or all of the image changed.\n\n")
QUALITY = (
    "You judge one generated image on its own.\n\n"
    "Score VISUAL QUALITY from 1 to 5: is it coherent and natural in structure, texture and lighting, free of "
    "artifacts and distortions? Low resolution or softness alone is not a flaw. 5 = excellent; 4 = minor flaws; "
    "3 = noticeable flaws; 2 = serious flaws; 1 = severe errors.\n\n")
INSTRUCTION = (
    "You judge an image edit. The first image is the original, the second the edited result{gt}.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Work out what changed between the images and what a correct result of the instruction would show, then "
    "score INSTRUCTION FOLLOWING from 1 to 5: 5 = the instruction is carried out completely and correctly; "
    "4 = correct with a small shortfall; 3 = partly carried out; 2 = barely; 1 = not at all or wrongly. Changes "
    "the instruction did not ask for are not judged here.\n\n")
KNOWLEDGE = (
    "You judge an image edit that needs real-world knowledge. The first image is the original, the second the "
    "edited result.\n\n"
    "Instruction given to the editor: {instruction}\n"
    "The knowledge behind the correct result: {explanation}\n\n"
    "Score two things from 1 to 5. INSTRUCTION FOLLOWING: is the instruction carried out completely and correctly "
    "(5) ... not at all (1)? KNOWLEDGE PLAUSIBILITY: does the result agree with the real-world behaviour the "
    "knowledge above describes (5 = fully; 1 = it contradicts it)? If instruction following is 2 or lower, "
    "knowledge plausibility is 1.\n\n")
QUESTIONS = {
    "consistency": "Rate VISUAL CONSISTENCY.",
    "quality": "Rate VISUAL QUALITY.",
    "instruction": "Rate INSTRUCTION FOLLOWING.",
    "knowledge": "Rate KNOWLEDGE PLAUSIBILITY.",
}
COMMON = ("count_change", "color_change", "anomaly_correction", "position_movement", "size_adjustment",
          "part_completion", "multi-instruction_execution")
KNOWLEDGE_TASKS = ("abstract_reasoning", "rule-based_reasoning", "mathematics", "practical_knowledge", "medicine",
                   "biology", "geography", "chemistry", "humanities", "physics")
MULTI_IMAGE = ("temporal_prediction", "multi-element_composition")


# With `judge_prompts` (KRIS-Bench's `ReasonEdit/prompts.py`, which its scripts import as `ReasonEdit.prompts`):
# the module's constants per view, as mercurystraw/Kris_Bench at 2114fec9 uses them (`metrics_common.py`,
# `metrics_view_change.py`, `metrics_knowledge.py`, `metrics_multi_element.py`): filled in with str.format
# (placeholders `instruct` and, for the knowledge view, `explanation`), the text sent BEFORE the images, answered
# in KRIS's JSON keys. `metrics_common.py` picks `prompt_abnormal_instruction_following` only for a category
# named "abnormality_correction", which no task is (the task is `anomaly_correction`), so the reference asks
# every common task with `prompt_instruction_following`, and so does this protocol.
VERBATIM = {"consistency": "prompt_consist", "quality": "prompt_quality",
            "instruction": "prompt_instruction_following", "viewpoint": "prompt_view_instruction_following",
            "knowledge": "prompt_dual_evaluation"}
PLACEHOLDERS = ("instruct", "explanation")
ANSWER_KEYS = (("consistency", "consistency_score"), ("quality", "quality_score"),
               ("instruction", "instruction_score"), ("knowledge", "knowledge_score"))
# The order of each view's JSON keys as KRIS-Bench's prompts ask for them (logits mode reads along it,
# bench_lib.judging.NamedScoresJSON.reply_layout): consistency and quality write their reasoning first;
# instruction following (also with the true view) gives its score first; the knowledge view gives the instruction
# score, its reasoning, then the knowledge score and its reasoning.
KEY_ORDER = {"consistency": ("reasoning", "consistency_score"), "quality": ("reasoning", "quality_score"),
             "instruction": ("instruction_score", "reasoning"), "viewpoint": ("instruction_score", "reasoning"),
             "knowledge": ("instruction_score", "instruction_reasoning", "knowledge_score", "knowledge_reasoning")}
FORMATS = {view: NamedScoresJSON(ANSWER_KEYS, order) for view, order in KEY_ORDER.items()}


@register_protocol("kris")
class KRISProtocol(Protocol):
    """KRIS-Bench: consistency, quality, instruction following and knowledge, 1-5, reported 0-100."""

    prompt_file_member = "ReasonEdit/prompts.py"

    def verbatim_names(self) -> list[str]:
        return list(VERBATIM.values())

    def check_verbatim(self) -> None:
        for name, text in self.verbatim.items():
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as err:
                raise ConfigError(f"`judge_prompts` {name} is not a str.format template: {err}.") from None
            if fields - set(PLACEHOLDERS):
                raise ConfigError(f"`judge_prompts` {name} has placeholders {sorted(fields - set(PLACEHOLDERS))}; "
                                  f"the kris protocol fills {list(PLACEHOLDERS)}.")

    def fill_failure(self, sample, questions, partial, seed):
        """lmms-eval's KRIS-Bench task: a dimension whose answer did not parse is left out (the sample's other
        dimensions still count); a sample with none left stays failed."""
        if not partial:
            return None
        return dict(partial), {"dropped": len([n for n in questions if n not in partial])}

    answer_names = tuple(QUESTIONS)
    metrics = tuple(Metric(name, 1, 5, "{:.1f}", scale_to_report=(-25.0, 25.0), primary=name == "score")
                    for name in ("consistency", "quality", "instruction", "knowledge", "score"))
    dimensions = ("common", "viewpoint", "knowledge")
    default_dimension = "common"
    category_defaults = {**{c: "common" for c in COMMON}, "viewpoint_change": "viewpoint",
                         **{c: "knowledge" for c in KNOWLEDGE_TASKS}}

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        kind = sample.dimension if sample.dimension in self.dimensions else self.default_dimension
        q = {n: Question(n, ONE_TO_FIVE, text) for n, text in QUESTIONS.items()}
        pair = (("Original image:", images["source"]), ("Edited image:", images["edited"]))
        fill = {"instruction": sample.instruction}
        if self.verbatim is not None:
            fmt = FORMATS
            text = {view: self.verbatim[name].format(
                instruct=sample.instruction, explanation=sample.fields.get("explanation") or "")
                for view, name in VERBATIM.items()}
            shown = (("", images["source"]), ("", images["edited"]))
            asks = [Ask("consistency", shown, text["consistency"], (q["consistency"],),
                        answer_format=fmt["consistency"], text_first=True),
                    Ask("quality", (("", images["edited"]),), text["quality"], (q["quality"],),
                        answer_format=fmt["quality"], text_first=True)]
            if kind == "knowledge":
                asks.append(Ask("knowledge", shown, text["knowledge"], (q["instruction"], q["knowledge"]),
                                answer_format=fmt["knowledge"], text_first=True))
            elif kind == "viewpoint" and sample.has_reference_image:
                asks.append(Ask("instruction", shown + (("", images.get("reference")),), text["viewpoint"],
                                (q["instruction"],), answer_format=fmt["viewpoint"], text_first=True))
            else:
                asks.append(Ask("instruction", shown, text["instruction"], (q["instruction"],),
                                answer_format=fmt["instruction"], text_first=True))
            return asks
        asks = [Ask("consistency", pair, CONSISTENCY.format(**fill), (q["consistency"],)),
                Ask("quality", (("Edited image:", images["edited"]),), QUALITY, (q["quality"],))]
        if kind == "knowledge":  # metrics_knowledge.py: one call for instruction following and knowledge
            asks.append(Ask("knowledge", pair, KNOWLEDGE.format(
                **fill, explanation=sample.fields.get("explanation") or "(none given)"),
                (q["instruction"], q["knowledge"])))
        elif kind == "viewpoint" and sample.has_reference_image:  # metrics_view_change.py: with the true view
            asks.append(Ask("instruction", pair + (("Ground-truth image:", images.get("reference")),),
                            INSTRUCTION.format(**fill, gt=", the third the ground truth of the requested view"),
                            (q["instruction"],)))
        else:
            asks.append(Ask("instruction", pair, INSTRUCTION.format(**fill, gt=""), (q["instruction"],)))
        return asks

    def texts(self) -> list[str]:
        return [CONSISTENCY, QUALITY, INSTRUCTION, KNOWLEDGE, *QUESTIONS.values()]

    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        # failure_policy reference may leave a dimension out (its answer did not parse): the others still count
        values = {name: answers[name].value for name in ("consistency", "quality", "instruction") if name in answers}
        knowledge = None
        if "knowledge" in answers:
            instruction = answers.get("instruction")
            low = sum(instruction.probability(v) for v in (1.0, 2.0)) if instruction else 0.0
            knowledge = low * 1.0 + (1 - low) * answers["knowledge"].value  # the prompt's cap, in expectation
            values["knowledge"] = knowledge
        return {**{k: values.get(k) for k in ("consistency", "quality", "instruction")}, "knowledge": knowledge,
                "score": sum(values.values()) / len(values)}
