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
multi-instruction), `viewpoint`, `knowledge` (the ten knowledge tasks), `multi_element` (multi-element
composition) and `temporal` (temporal prediction). The last two have several source images: their consistency
and instruction views show every source (metrics_multi_element.py: the sources in order, then the edit;
metrics_temporal_prediction.py: the frames in time order with the edit at the frame to predict), and they are
edited by an editor that takes several images (a sample an editor can't take is edit_failed, with the reason).

The report adds KRIS-Bench's summary table (`knowledge_types`): the tasks grouped into seven sub-types and three
knowledge types (Factual, Conceptual, Procedural), each group's score the mean over every dimension value of its
samples (a sample gives one value per dimension its group reports), on 0-100: BAGEL's KRIS-Bench summary script,
`eval/gen/kris/summarize.py` (ByteDance-Seed/Bagel; the copy read: yinyuanzhang/Bagel at f8819fc7), which the
lmms-eval port's 0-100 normalisation follows ("summarize.py"). lmms-eval's own big-class averages instead take
the mean of each sample's mean (`kris_bench_aggregate_mean` over `kris_bench_<type>_knowledge_avg`): the two
differ when knowledge and non-knowledge samples share a group, so this table follows the summary script.
"""

from __future__ import annotations

import string
from typing import Any, Optional

from ..config import ConfigError
from ..judging import NamedScoresJSON
from ..metrics import Block, Label, Table, fmt
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
CONSISTENCY_MULTI = (
    "You judge an image composed from several source images. The images before the last are the sources, in "
    "order; the last image is the result.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Score VISUAL CONSISTENCY from 1 to 5: are the elements the result takes from the sources (objects, people's "
    "identity and appearance, the scene) kept faithfully, apart from what the instruction asks to change? "
    "5 = faithful; 4 = one tiny difference; 3 = one clear unintended change; 2 = two or more; 1 = the sources "
    "are hardly recognisable.\n\n")
INSTRUCTION_MULTI = (
    "You judge an image composed from several source images. The images before the last are the sources, in "
    "order; the last image is the result.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Score INSTRUCTION FOLLOWING from 1 to 5: does the result take the elements the instruction names from the "
    "right sources and combine them as it says? 5 = completely and correctly; 4 = a small shortfall; 3 = partly; "
    "2 = barely; 1 = not at all or wrongly.\n\n")
CONSISTENCY_TEMPORAL = (
    "You judge a generated frame of a short sequence. The frames are shown in time order; frame {frame} is the "
    "generated one, the others are given.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Score VISUAL CONSISTENCY from 1 to 5: does the generated frame keep the scene, the objects and people's "
    "identity of the given frames? 5 = fully; 4 = one tiny difference; 3 = one clear inconsistency; 2 = two or "
    "more; 1 = it does not belong to the sequence.\n\n")
INSTRUCTION_TEMPORAL = (
    "You judge a generated frame of a short sequence. The frames are shown in time order; frame {frame} is the "
    "generated one, the others are given.\n\n"
    "Instruction given to the editor: {instruction}\n\n"
    "Score INSTRUCTION FOLLOWING from 1 to 5: is the generated frame what the sequence shows at frame {frame} "
    "(the right moment, the right state of things), as the instruction asks? 5 = exactly; 4 = a small "
    "shortfall; 3 = partly; 2 = barely; 1 = not at all.\n\n")
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
MULTI_ELEMENT, TEMPORAL = "multi-element_composition", "temporal_prediction"  # tasks with several source images

# KRIS-Bench's summary (BAGEL `eval/gen/kris/summarize.py`: `kris_benchamrk_type`, `kris_benchamrk_metric`,
# `meta_categories`): task -> sub-type, the dimensions each sub-type reports, sub-types -> knowledge type.
SUBTYPES = {
    "Attribute Perception": ("count_change", "color_change", "size_adjustment", "part_completion",
                             "anomaly_correction"),
    "Spatial Perception": ("viewpoint_change", "position_movement"),
    "Temporal Prediction": (TEMPORAL,),
    "Social Science": ("humanities", "practical_knowledge"),
    "Natural Science": ("biology", "chemistry", "geography", "medicine", "mathematics", "physics"),
    "Logical Reasoning": ("abstract_reasoning", "rule-based_reasoning"),
    "Instruction Decomposition": (MULTI_ELEMENT, "multi-instruction_execution"),
}
WITH_KNOWLEDGE = ("Social Science", "Natural Science", "Logical Reasoning")
KNOWLEDGE_TYPES = {"Factual": ("Attribute Perception", "Spatial Perception", "Temporal Prediction"),
                   "Conceptual": ("Social Science", "Natural Science"),
                   "Procedural": ("Logical Reasoning", "Instruction Decomposition")}
SUMMARY_COLUMNS = (("consistency", "VC"), ("quality", "VQ"), ("instruction", "IF"), ("knowledge", "KP"))


# With `judge_prompts` (KRIS-Bench's `ReasonEdit/prompts.py`, which its scripts import as `ReasonEdit.prompts`):
# the module's constants per view, as mercurystraw/Kris_Bench at 2114fec9 uses them (`metrics_common.py`,
# `metrics_view_change.py`, `metrics_knowledge.py`, `metrics_multi_element.py`): filled in with str.format
# (placeholders `instruct` and, for the knowledge view, `explanation`), the text sent BEFORE the images, answered
# in KRIS's JSON keys. `metrics_common.py` picks `prompt_abnormal_instruction_following` only for a category
# named "abnormality_correction", which no task is (the task is `anomaly_correction`), so the reference asks
# every common task with `prompt_instruction_following`, and so does this protocol.
# The several-source views (`metrics_multi_element.py`, `metrics_temporal_prediction.py`): their own consistency
# and instruction constants (temporal: placeholder `N`, the frame to predict), the text first, then the sources
# and the edit (multi-element: the sources in order, the edit last; temporal: all frames in time order, the edit
# at frame N); quality as for every task.
VERBATIM = {"consistency": "prompt_consist", "quality": "prompt_quality",
            "instruction": "prompt_instruction_following", "viewpoint": "prompt_view_instruction_following",
            "knowledge": "prompt_dual_evaluation", "consistency_multi": "prompt_consist_multi",
            "instruction_multi": "prompt_instruction_multi", "consistency_temporal": "prompt_consist_temporal",
            "instruction_temporal": "prompt_instruction_temporal"}
PLACEHOLDERS = ("instruct", "explanation", "N")
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
# The several-source views: the copies of their prompts differ on whether a description comes before the JSON
# (`{"consistency_score": X, "reasoning": ...}`, `{"instruction_score": X, ...}`), so logits mode reads the score
# after the judge's own text up to the key, which is right either way (the judge may write the JSON at once).
SEVERAL_SOURCE_FORMATS = {"consistency": NamedScoresJSON(ANSWER_KEYS, ("reasoning", "consistency_score")),
                          "instruction": NamedScoresJSON(ANSWER_KEYS, ("reasoning", "instruction_score")),
                          "quality": FORMATS["quality"]}


@register_protocol("kris")
class KRISProtocol(Protocol):
    """KRIS-Bench: consistency, quality, instruction following and knowledge, 1-5, reported 0-100."""

    prompt_file_member = "ReasonEdit/prompts.py"
    several_sources = True  # multi-element composition and temporal prediction show every source

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
    dimensions = ("common", "viewpoint", "knowledge", "multi_element", "temporal")
    default_dimension = "common"
    category_defaults = {**{c: "common" for c in COMMON}, "viewpoint_change": "viewpoint",
                         **{c: "knowledge" for c in KNOWLEDGE_TASKS}, MULTI_ELEMENT: "multi_element",
                         TEMPORAL: "temporal"}

    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        kind = sample.dimension if sample.dimension in self.dimensions else self.default_dimension
        if kind in ("multi_element", "temporal"):
            return self._several_sources(kind, sample, images)
        q = {n: Question(n, ONE_TO_FIVE, text) for n, text in QUESTIONS.items()}
        pair = (("Original image:", images["source"]), ("Edited image:", images["edited"]))
        fill = {"instruction": sample.instruction}
        if self.verbatim is not None:
            fmt = FORMATS
            text = {view: self.verbatim[name].format(
                instruct=sample.instruction, explanation=sample.fields.get("explanation") or "", N="")
                for view, name in VERBATIM.items() if not view.endswith(("_multi", "_temporal"))}
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

    def _several_sources(self, kind: str, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        """Multi-element composition and temporal prediction: consistency and instruction following see every
        source and the edit; quality the edit alone. In the benchmark's words the text comes first and the
        images carry no labels (as every verbatim view here); in this project's words each image is labelled."""
        q = {n: Question(n, ONE_TO_FIVE, text) for n, text in QUESTIONS.items()}
        sources, edited = tuple(images.get("sources") or (images["source"],)), images["edited"]
        verbatim = self.verbatim is not None
        if kind == "multi_element":  # metrics_multi_element.py: the sources in order, then the edit
            shown = tuple(("" if verbatim else f"Source image {k + 1}:", image) for k, image in enumerate(sources))
            shown += (("" if verbatim else "Result:", edited),)
            frame = ""
        else:  # metrics_temporal_prediction.py: the frames sorted by number, the edit at the predicted frame
            frames = [int(f) for f in str(sample.fields.get("frames") or "").split(",") if f.strip().isdigit()]
            if len(frames) != len(sources):
                frames = list(range(1, len(sources) + 1))
            frame = int(sample.fields.get("target_frame") or max(frames, default=0) + 1)
            order = sorted([(f, 0, f"Frame {f} (given):", image) for f, image in zip(frames, sources)]
                           + [(frame, 1, f"Frame {frame} (generated):", edited)], key=lambda t: (t[0], t[1]))
            shown = tuple(("" if verbatim else label, image) for _, _, label, image in order)
        if verbatim:
            fmt = SEVERAL_SOURCE_FORMATS
            suffix = "multi" if kind == "multi_element" else "temporal"
            names = {"consistency": f"consistency_{suffix}", "instruction": f"instruction_{suffix}",
                     "quality": "quality"}
            text = {view: self.verbatim[VERBATIM[name]].format(
                instruct=sample.instruction, explanation=sample.fields.get("explanation") or "", N=frame)
                for view, name in names.items()}
            return [Ask("consistency", shown, text["consistency"], (q["consistency"],),
                        answer_format=fmt["consistency"], text_first=True),
                    Ask("quality", (("", edited),), text["quality"], (q["quality"],), answer_format=fmt["quality"],
                        text_first=True),
                    Ask("instruction", shown, text["instruction"], (q["instruction"],),
                        answer_format=fmt["instruction"], text_first=True)]
        consistency, instruction = (CONSISTENCY_MULTI, INSTRUCTION_MULTI) if kind == "multi_element" else \
            (CONSISTENCY_TEMPORAL, INSTRUCTION_TEMPORAL)
        fill = {"instruction": sample.instruction, "frame": frame}
        return [Ask("consistency", shown, consistency.format(**fill), (q["consistency"],), text_first=True),
                Ask("quality", (("Edited image:", edited),), QUALITY, (q["quality"],)),
                Ask("instruction", shown, instruction.format(**fill), (q["instruction"],), text_first=True)]

    def texts(self) -> list[str]:
        return [CONSISTENCY, QUALITY, INSTRUCTION, KNOWLEDGE, CONSISTENCY_MULTI, INSTRUCTION_MULTI,
                CONSISTENCY_TEMPORAL, INSTRUCTION_TEMPORAL, *QUESTIONS.values()]

    def report_extras(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, Any]:
        """`knowledge_types`: KRIS-Bench's summary table (see the module's docstring). Per sub-type: the mean of
        each dimension it reports, and `AVG`, the mean over all those values of its samples; per knowledge type
        and overall: `AVG`, the mean over all values of its sub-types. A value is a scored sample's dimension
        (a dimension its answers left out does not count); all on 0-100. Tasks KRIS does not name are left out."""
        def values(subtype: str) -> dict[str, list[float]]:
            tasks = SUBTYPES[subtype]
            wanted = [name for name, _ in SUMMARY_COLUMNS if name != "knowledge" or subtype in WITH_KNOWLEDGE]
            out: dict[str, list[float]] = {name: [] for name in wanted}
            for row in rows:
                metrics = row.get("metrics") or {}
                if row["status"] != "ok" or row["category"] not in tasks:
                    continue
                for name in wanted:
                    if metrics.get(name) is not None:
                        out[name].append(self.metric(name).shown(metrics[name]))
            return out

        def mean(numbers: list[float]) -> Optional[float]:
            return sum(numbers) / len(numbers) if numbers else None

        flat = {subtype: [v for vs in values(subtype).values() for v in vs] for subtype in SUBTYPES}
        subtypes = {}
        for subtype in SUBTYPES:
            per = values(subtype)
            subtypes[subtype] = {**{short: mean(per[name]) for name, short in SUMMARY_COLUMNS if name in per},
                                 "AVG": mean(flat[subtype]), "count": len({r["id"] for r in rows if r["status"] == "ok"
                                                                         and r["category"] in SUBTYPES[subtype]})}
        types = {kind: {"AVG": mean([v for sub in subs for v in flat[sub]])} for kind, subs in KNOWLEDGE_TYPES.items()}
        overall = {"AVG": mean([v for vs in flat.values() for v in vs])}
        return {"knowledge_types": {"subtypes": subtypes, "types": types, "overall": overall,
                                    "source": "BAGEL eval/gen/kris/summarize.py (KRIS-Bench's summary)"}}

    def headline(self, report: dict[str, Any]) -> list[Block]:
        """The report's table per task (the default), then KRIS-Bench's summary: the sub-types' VC, VQ, IF, KP and
        AVG, then Factual, Conceptual, Procedural and Overall (AVG), on 0-100."""
        blocks = super().headline(report)
        summary = report.get("knowledge_types")
        if not summary:
            return blocks

        def cell(value: Optional[float]) -> str:
            return fmt(value)

        rows = [(subtype, *(cell(stats.get(short)) for _, short in SUMMARY_COLUMNS), cell(stats["AVG"]),
                 str(stats["count"])) for subtype, stats in summary["subtypes"].items()]
        rows += [(Label(f"{kind} Knowledge"), "", "", "", "", cell(stats["AVG"]), "")
                 for kind, stats in summary["types"].items()]
        rows.append((Label("Overall", " (every value of every sub-type)"), "", "", "", "",
                     cell(summary["overall"]["AVG"]), ""))
        blocks += ["KRIS-Bench's summary by knowledge type (0-100; AVG: the mean over every dimension value of the "
                   "group's samples):",
                   Table(("sub-type", "VC", "VQ", "IF", "KP", "AVG", "n"), tuple(rows))]
        return blocks

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
