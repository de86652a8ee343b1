"""`viescore`: VIEScore's text-guided image editing protocol, as GEdit-Bench uses it.

Rules (TIGER-AI-Lab/VIEScore `viescore/__init__.py::VIEScore.evaluate`, task "tie"; stepfun-ai/Step1X-Edit
`GEdit-Bench/test_gedit_score.py` and `calculate_statistics.py`):
- semantic consistency: two 0-10 scores, editing success and over-editing, judged on the source then the edited
  image; SC = min of them;
- perceptual quality: two 0-10 scores, naturalness and artifacts, judged on the EDITED image alone;
  PQ = min of them;
- O = sqrt(SC * PQ) per sample; every metric's mean is over samples (O is the mean of per-sample values);
- GEdit-Bench resizes the edited image to the source's size before judging (done here too) and reports
  per task type, their unweighted mean ("Average"), the same over the samples flagged `Intersection_exist`,
  per instruction language.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from ..judging import ScoreJSON
from ..metrics import Block, Label, Table
from .base import (
    ZERO_TO_TEN,
    Answer,
    Ask,
    Metric,
    Protocol,
    Question,
    SampleView,
    metric_count,
    register_protocol,
    sqrt_product,
)

SEMANTICS = (
    "You judge an image edit made from a text instruction. The first image is the original, the second is the "
    "edited result.\n\nInstruction: {instruction}\n\n"
    "Score two things from 0 to 10. EDITING SUCCESS: how completely and correctly the edited image carries out "
    "the instruction (0: not at all; 10: fully). OVER-EDITING: how well everything the instruction does not "
    "mention is left as it was (0: the image was changed far beyond the instruction, or replaced; 10: only what "
    "was asked changed). If the edit did nothing, the two images look the same: that is no editing success. "
    "A result both minimal and effective scores 10 on both.\n\n")
QUALITY = (
    "You judge the perceptual quality of one generated image, without regard to any instruction.\n\n"
    "Score two things from 0 to 10. NATURALNESS: does the image look natural and coherent, with believable "
    "lighting, perspective, proportions and sense of distance (0: clearly unnatural; 10: entirely natural)? "
    "ARTIFACTS: is it free of visible artifacts such as distortions, blur, smears, noise, watermarks or "
    "malformed parts (0: heavy artifacts; 10: none)?\n\n")
QUESTIONS = {
    "editing_success": "Rate EDITING SUCCESS only.",
    "over_editing": "Rate OVER-EDITING only (10 = nothing beyond the instruction changed).",
    "naturalness": "Rate NATURALNESS only.",
    "artifacts": "Rate ARTIFACTS only (10 = no artifacts).",
}


# With `judge_prompts` (VIEScore's viescore/vie_prompts.py): VIEScore.__init__ for task "tie" joins these with
# "\n" (semantics: context, rule, SC rule with "<instruction>" replaced; quality: context, PQ rule); each is sent
# as its text, then its images (mllm_tools prepare_prompt), answered in VIEScore's JSON `score` list.
VERBATIM_SC = ("_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC")
VERBATIM_PQ = ("_context_no_delimit", "_prompts_0shot_rule_PQ")
VIEWS = {"semantics": ("editing_success", "over_editing"), "quality": ("naturalness", "artifacts")}


@register_protocol("viescore")
class VIEScoreProtocol(Protocol):
    """VIEScore as GEdit-Bench uses it: semantics, quality and overall, 0-10."""

    prompt_file_member = "viescore/vie_prompts.py"

    def verbatim_names(self) -> list[str]:
        return list(dict.fromkeys(VERBATIM_SC + VERBATIM_PQ))

    def fill_failure(self, sample, questions, partial, seed):
        """VIEScore (utils.py mllm_output_to_dict, give_up_parsing): after its retry, a view that still does not
        parse gets a guessed score, random.randint(0, 10), as a list of one (so the view's min is the guess);
        here drawn from a generator seeded with the sample's seed and the view."""
        answers, guessed = dict(partial), 0
        for view, names in VIEWS.items():
            if any(name not in partial for name in names):
                guess = float(random.Random(f"{seed}/{view}").randint(0, 10))
                answers.update({name: guess for name in names})
                guessed += 1
        return answers, {"guessed": guessed}

    answer_names = tuple(QUESTIONS)
    metrics = (Metric("semantics", 0, 10, "{:.3f}"), Metric("quality", 0, 10, "{:.3f}"),
               Metric("overall", 0, 10, "{:.3f}", primary=True))

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        edited = images["edited"]
        source = images["source"]
        if edited is not None and source is not None and edited.size != source.size:
            edited = edited.resize(source.size)  # GEdit-Bench: the edit is judged at the source's size
        q = {name: Question(name, ZERO_TO_TEN, text) for name, text in QUESTIONS.items()}
        if self.verbatim is not None:
            fmt = ScoreJSON(delimiter="||V^=^V||", wrap_single=True)
            semantics = "\n".join(self.verbatim[n] for n in VERBATIM_SC).replace("<instruction>", sample.instruction)
            return [Ask("semantics", (("", source), ("", edited)), semantics,
                        (q["editing_success"], q["over_editing"]), answer_format=fmt, text_first=True),
                    Ask("quality", (("", edited),), "\n".join(self.verbatim[n] for n in VERBATIM_PQ),
                        (q["naturalness"], q["artifacts"]), answer_format=fmt, text_first=True)]
        return [Ask("semantics", (("Original image:", source), ("Edited image:", edited)),
                    SEMANTICS.replace("{instruction}", sample.instruction),
                    (q["editing_success"], q["over_editing"])),
                Ask("quality", (("Image:", edited),), QUALITY, (q["naturalness"], q["artifacts"]))]

    def texts(self) -> list[str]:
        return [SEMANTICS, QUALITY, *QUESTIONS.values()]

    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        semantics = min(answers["editing_success"].value, answers["over_editing"].value)
        quality = min(answers["naturalness"].value, answers["artifacts"].value)
        return {"semantics": semantics, "quality": quality, "overall": sqrt_product(semantics, quality)}

    def report_extras(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, Any]:
        """GEdit-Bench's aggregation (calculate_statistics.py analyze_scores): per instruction language when the
        data has them, the metrics per task type, their unweighted mean over task types, and the same over the
        samples flagged as in the intersection subset."""

        def extras(row):
            return row.get("extras") or {}

        def part(selected: list[dict[str, Any]]) -> dict[str, Any]:
            cats = sorted({r["category"] for r in selected if r["category"]})
            out = {"categories": {c: {"metrics": self.aggregate([r for r in selected if r["category"] == c])}
                                  for c in cats},
                   "macro_metrics": self.macro_aggregate(selected, cats)}
            if any(extras(r).get("intersection") is not None for r in selected):
                inter = [r for r in selected if extras(r).get("intersection") in (True, 1, "1", "true", "True")]
                out["intersection_macro_metrics"] = self.macro_aggregate(inter, sorted({r["category"] for r in inter}))
            return out

        languages = sorted({str(extras(r)["language"]) for r in rows if extras(r).get("language") not in (None, "")})
        if not languages:
            return {"groups": {"": part(rows)}}
        return {"groups": {lang: part([r for r in rows if str(extras(r).get("language")) == lang])
                           for lang in languages}}

    def headline(self, report: dict[str, Any]) -> list[Block]:
        """GEdit-Bench's table: SC, PQ, O per task type (category), their unweighted mean ("Average"), and the
        same over the intersection subset when the data flags it, per instruction language when it has them."""
        blocks: list[Block] = []
        groups = report.get("groups") or {"": {"categories": report["categories"],
                                               "macro_metrics": report["overall"]["macro_metrics"]}}
        for language, part in groups.items():
            if language:
                blocks.append(f"Instruction language {language}:")
            rows = [self._row(category, stats["metrics"]) for category, stats in part["categories"].items()]
            rows.append(self._row(Label("Average", " (mean of the task types)"), part["macro_metrics"]))
            if part.get("intersection_macro_metrics"):
                rows.append(self._row(Label("Average, intersection subset"), part["intersection_macro_metrics"]))
            blocks.append(Table(("task type", "SC", "PQ", "O", "n"), tuple(rows)))
        return blocks

    def _row(self, label, metrics: dict[str, Any]) -> tuple:
        return (label, *(m.format(metrics.get(m.name)) for m in self.metrics), str(metric_count(metrics, self.metrics)))
