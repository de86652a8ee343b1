"""`re_edit`: RE-Edit's protocol (Yixuan-Ding-ZJU/RE-Edit `src/iterative_pipeline_v7.py`:
`_stage4_comparative_scoring`, `_score_sc_metric`, `_score_instruction_following_metric`;
`src/data/iterative_data.py`: `calculate_statistics`, `calculate_global_statistics`; criteria in
`config/config_iterative_refinement.yaml` `prompts`).

Per sample, three views, each showing the source then the edited image:
- the sample's own reasoning dimension (physical, environmental, cultural, causal, referential), one yes/no
  question: is the edit consistent with that kind of reasoning; the view shows the source's description and the
  instruction, and, when the sample has one, its rationale as the task's challenge; when in doubt, no;
- instruction following, 0-10, by deduction from 10 (missing or extra edits, edits in the wrong place,
  damaged objects or people);
- semantic consistency: editing success and over-editing, 0-10 each; SC = min of them.
Aggregation: the yes-rate (% of samples answered yes) per category; IF and SC means; overall values pool the
samples. The headline is RE-Edit's table: the five yes-rates, IF and SC in one row. In logits mode `yes` is
P(yes) (renormalised over yes and no), so the yes-rate is the expected share of yes answers.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ..config import ConfigError
from ..judging import ScoreJSON
from ..metrics import Table
from .base import YES_NO, ZERO_TO_TEN, Answer, Ask, Metric, Protocol, Question, SampleView, register_protocol

DIMENSIONS = {
    "physical": "PHYSICAL and geometric consistency: lighting and shadows, contact and support between objects, "
                "scale and perspective, materials and reflections, motion under gravity, and an overall look that "
                "fits together",
    "environmental": "ENVIRONMENTAL and contextual consistency: weather, time of day, season, surroundings and "
                     "atmosphere agree with each other and with what the instruction implies over time",
    "cultural": "CULTURAL and social consistency: clothing, behaviour, gestures, symbols and customs fit the "
                "culture, the occasion and the period the instruction implies",
    "causal": "CAUSAL and logical consistency: the edit shows the outcome an action or event actually leads to, "
              "with the right actor and object and the right order of cause and effect",
    "referential": "REFERENTIAL correctness: exactly the object the instruction refers to (by position, "
                   "relation or description) is the one edited, and the edit stays within it",
}
REASONING = (
    "You are a strict judge of one kind of reasoning in image edits. The first image is the original, the second "
    "the edited result. Judge only {dimension}.\n\n"
    "The original image shows: {description}\n"
    "Instruction given to the editor: {instruction}{challenge}\n\n"
    "Answer yes only if the edited image is clearly correct in this respect. When you are unsure, or the result "
    "is borderline, answer no. A strong global colour distortion is a no. Do not count as wrong anything "
    "unrealistic that the instruction itself asks for.\n\n")
INSTRUCTION_FOLLOWING = (
    "You judge how precisely an image edit follows its instruction. The first image is the original, the second "
    "the edited result.\n\nInstruction: {instruction}\n\n"
    "Start from 10 and deduct: 3 for each requested change that is missing; 3 for each change that was not "
    "requested; 2 for each change made in the wrong place; 2 to 4 for a wrong facial expression; 3 to 5 for "
    "malformed limbs or a wrong number of people; 3 to 5 for an object removed or extracted unclearly; 3 when "
    "the edited object is damaged. 0 when the edit is entirely wrong or unrelated; 10 only when everything is "
    "right. The score is a whole number from 0 to 10.\n\n")
SEMANTIC_CONSISTENCY = (
    "You judge an image edit made from a text instruction. The first image is the original, the second the "
    "edited result.\n\nInstruction: {instruction}\n\n"
    "Score two things from 0 to 10. EDITING SUCCESS: how completely and correctly the instruction is carried out "
    "(0: not at all; 10: fully). OVER-EDITING: how well everything the instruction does not mention is kept (0: "
    "the image changed far beyond the instruction; 10: only what was asked changed).\n\n")
# With `judge_prompts` (RE-Edit's single_scoring_part_vllm/scoring_config.yaml): per view, `prompts.<key>`'s
# system_prompt and user_prompt_template, filled in and sent as RE-Edit's prompt_manager.py does (the placeholders
# replaced, "{{"/"}}" made single braces; the system prompt, a blank line and the user prompt as one text after
# the source and the edited image, no system turn), answered in RE-Edit's JSON `score` / `reasoning`.
VERBATIM_VIEWS = {"instruction_following": "instruction_following", "semantic_consistency": "sc_metric"}
PLACEHOLDERS = ("edit_instruction", "original_description", "rationale")
FILE_MEMBER = "single_scoring_part_vllm/scoring_config.yaml"
QUESTIONS = {
    "yes": "Is the edited image correct in this respect?",
    "instruction_following": "Give the instruction-following score.",
    "editing_success": "Rate EDITING SUCCESS only.",
    "over_editing": "Rate OVER-EDITING only (10 = nothing beyond the instruction changed).",
}


@register_protocol("re_edit")
class REEditProtocol(Protocol):
    """RE-Edit: yes/no on the sample's reasoning dimension, instruction following, semantic consistency."""

    answer_names = tuple(QUESTIONS)
    metrics = (Metric("yes_rate", 0, 1, "{:.1f}", scale_to_report=(0.0, 100.0), primary=True),
               Metric("instruction_following", 0, 10), Metric("semantic_consistency", 0, 10))
    dimensions = tuple(DIMENSIONS)
    default_dimension = "causal"
    category_defaults = {"physics": "physical", "environment": "environmental", "social": "cultural",
                         "物理": "physical", "环境": "environmental", "社会": "cultural", "因果": "causal",
                         "指代": "referential"}  # the harness's own names; RE-Edit's Chinese subset names

    prompt_file_member = FILE_MEMBER

    def verbatim_names(self) -> list[str]:
        return [f"prompts.{key}.{part}" for key in (*DIMENSIONS, *VERBATIM_VIEWS.values())
                for part in ("system_prompt", "user_prompt_template")]

    def check_verbatim(self) -> None:
        for name, text in self.verbatim.items():
            unknown = sorted(set(re.findall(r"(?<!\{)\{([A-Za-z_]\w*)\}(?!\})", text)) - set(PLACEHOLDERS))
            if unknown:
                raise ConfigError(f"`judge_prompts` {name} has placeholders {unknown} that RE-Edit's prompt "
                                  f"manager does not fill (it fills {list(PLACEHOLDERS)}).")

    def verbatim_text(self, key: str, sample: SampleView) -> str:
        """RE-Edit's prompt for `key` (a dimension or a metric), filled in for the sample (prompt_manager.py:
        format_user_prompt, build_messages)."""
        values = {"edit_instruction": sample.instruction,
                  "original_description": sample.fields.get("description") or "",
                  "rationale": sample.fields.get("rationale") or ""}
        user = self.verbatim[f"prompts.{key}.user_prompt_template"]
        user = user.replace("{{", "\0open\0").replace("}}", "\0close\0")
        for name, value in values.items():
            user = user.replace("{" + name + "}", str(value))
        user = user.replace("\0open\0", "{").replace("\0close\0", "}")
        system = self.verbatim[f"prompts.{key}.system_prompt"]
        return f"{system}\n\n{user}" if system else user

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        dim = sample.dimension if sample.dimension in DIMENSIONS else self.default_dimension
        if self.verbatim is not None:
            shown = (("", images["source"]), ("", images["edited"]))
            answer = ScoreJSON()
            return [Ask("reasoning", shown, self.verbatim_text(dim, sample),
                        (Question("yes", YES_NO, QUESTIONS["yes"]),), answer_format=answer),
                    Ask("instruction_following", shown, self.verbatim_text("instruction_following", sample),
                        (Question("instruction_following", ZERO_TO_TEN, QUESTIONS["instruction_following"]),),
                        answer_format=answer),
                    Ask("semantic_consistency", shown, self.verbatim_text("sc_metric", sample),
                        (Question("editing_success", ZERO_TO_TEN, QUESTIONS["editing_success"]),
                         Question("over_editing", ZERO_TO_TEN, QUESTIONS["over_editing"])), answer_format=answer)]
        pair = (("Original image:", images["source"]), ("Edited image:", images["edited"]))
        rationale = (sample.fields.get("rationale") or "").strip()
        reasoning = REASONING.format(
            dimension=DIMENSIONS[dim], description=sample.fields.get("description") or "(no description given)",
            instruction=sample.instruction,
            challenge=f"\nThe task's challenge: {rationale}" if rationale else "")  # only when there is one
        fill = {"instruction": sample.instruction}
        return [Ask("reasoning", pair, reasoning, (Question("yes", YES_NO, QUESTIONS["yes"]),)),
                Ask("instruction_following", pair, INSTRUCTION_FOLLOWING.format(**fill),
                    (Question("instruction_following", ZERO_TO_TEN, QUESTIONS["instruction_following"]),)),
                Ask("semantic_consistency", pair, SEMANTIC_CONSISTENCY.format(**fill),
                    (Question("editing_success", ZERO_TO_TEN, QUESTIONS["editing_success"]),
                     Question("over_editing", ZERO_TO_TEN, QUESTIONS["over_editing"])))]

    def texts(self) -> list[str]:
        return [REASONING, INSTRUCTION_FOLLOWING, SEMANTIC_CONSISTENCY, *DIMENSIONS.values(), *QUESTIONS.values()]

    # iterative_pipeline_v7.py `_load_primary_images_from_dir`: an edit file that is missing or does not load is
    # replaced by the original image, which is then scored.
    missing_edit_on_source = True

    def left_out(self, sample: SampleView) -> Optional[str]:
        """A record RE-Edit's loader does not read (bench_lib.formats.re_edit: `left_out_by_reference`)."""
        return sample.fields.get("left_out_by_reference") or None

    def fill_failure(self, sample, questions, partial, seed):
        """RE-Edit (iterative_pipeline_v7.py): an unparsed yes/no is "no", an unparsed IF score 5.0, an unparsed
        SC score [5.0, 5.0]."""
        fills = {"yes": 0.0, "instruction_following": 5.0, "editing_success": 5.0, "over_editing": 5.0}
        missing = [name for name in questions if name not in partial]
        return {**partial, **{name: fills[name] for name in missing}}, {"filled": len(missing)}

    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        return {"yes_rate": answers["yes"].value,
                "instruction_following": answers["instruction_following"].value,
                "semantic_consistency": min(answers["editing_success"].value, answers["over_editing"].value)}

    def headline(self, report: dict[str, Any]) -> list[Table]:
        """RE-Edit's table: the yes-rate (%) of each of its five categories, then IF and SC (pooled means)."""
        categories = report["categories"]
        # another category only when it has a value: not one whose records failure_policy reference left out
        others = [c for c in categories if c not in DIMENSIONS
                  and (categories[c]["metrics"].get("yes_rate") or {}).get("count")]
        names = [c for c in DIMENSIONS if c in categories] + others
        header = [c.capitalize() if c in DIMENSIONS else c for c in names] + ["IF", "SC"]
        cells = [self.metric("yes_rate").format(categories[c]["metrics"].get("yes_rate")) for c in names]
        overall = report["overall"]["metrics"]
        cells += [self.metric(m).format(overall.get(m)) for m in ("instruction_following", "semantic_consistency")]
        return [Table(tuple(header), (tuple(cells),), label_columns=0)]
