"""A `results.jsonl` row, built in one place for the editor's rows and the sanity baselines' alike.

The first keys are the output contract (id, category, instruction, status, score, edited_image, error, seed);
the rest come from the judge, the rubric, the dataset and the run's records.
"""

from __future__ import annotations

from typing import Any, Optional

from .data import Sample
from .judges.rubrics import Rubrics
from .scoring import combine

STATUSES = ("ok", "invalid_input", "edit_failed", "judge_failed")


def build_row(sample: Sample, *, edit: dict[str, Any], judgement: Optional[dict[str, Any]], seed: Optional[int],
              score_formula: str, score_weights: dict[str, float], rubrics: Rubrics) -> dict[str, Any]:
    """One sample's row from its edit record and judge record (records of earlier attempts included).

    A failed edit is the row's status; an ok edit takes the judgement's status. Sub-scores and score are only
    given for an ok sample; `score` is computed here from the recorded sub-scores, so a changed score formula
    re-scores a resumed run without judging again."""
    status, error = edit["status"], edit.get("error")
    judged: dict[str, Any] = {}
    if status == "ok":
        assert judgement is not None, sample.id  # every ok edit was judged (or failed) by now
        status, error, judged = judgement["status"], judgement.get("error"), judgement
    assert status in STATUSES, status
    subscores = judged.get("subscores") if status == "ok" else None
    score = combine(subscores, score_formula, score_weights) if subscores else None
    assert (score is not None) == (status == "ok"), (sample.id, status, score)
    return {
        "id": sample.id,
        "category": sample.category,
        "instruction": sample.instruction,
        "status": status,
        "score": score,
        "edited_image": edit.get("edited_image"),
        "error": error,
        "seed": seed,
        "subscores": subscores,
        "rationale": judged.get("rationale"),
        "judge_parse": judged.get("parse"),  # ok | reasked | failed; null when the sample was not judged
        "judge_raw": judged.get("raw") or [],  # answers that did not parse: kept, never scored
        "digit_mass": judged.get("digit_mass"),  # logits mode; also kept when an off-format answer failed
        "rubric": rubrics.rubric_name(sample.category) if sample.category else None,
        "rubric_sha256": rubrics.sha256(sample.category),
        "human_score": sample.human_score,
        "flags": edit.get("flags") or [],
        "attempts": {"edit": edit.get("attempt"), "judge": judged.get("attempt")},  # see run.json "history"
    }


def baseline_edit(sample: Sample) -> dict[str, Any]:
    """A sanity baseline's "edit record": computed from the source when judged, so never stale or saved."""
    if sample.problem:
        return {"status": "invalid_input", "error": sample.problem}
    return {"status": "ok", "edited_image": None}
