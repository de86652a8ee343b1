"""A `results.jsonl` row, built in one place for the editor's rows and the sanity baselines' alike.

The first keys are the output contract (id, category, instruction, status, score, edited_image, error, seed);
the rest come from the judge and the protocol, the dataset and the run's records.
"""

from __future__ import annotations

from typing import Any, Optional

from .data import FIELD_COLUMNS, Sample
from .protocols import Protocol, view_of

STATUSES = ("ok", "invalid_input", "edit_failed", "judge_failed")


def build_row(sample: Sample, *, edit: dict[str, Any], judgement: Optional[dict[str, Any]], seed: Optional[int],
              protocol: Protocol, category_map: dict[str, str]) -> dict[str, Any]:
    """One sample's row from its edit record and judge record (records of earlier attempts included).

    A failed edit is the row's status; an ok edit takes the judgement's status. Answers, metrics and score are
    only given for an ok sample; the metrics (and `score`, the protocol's primary metric) are computed here
    from the recorded answers, so a changed formula re-scores a resumed run without judging again."""
    status, error = edit["status"], edit.get("error")
    judged: dict[str, Any] = {}
    if status == "ok":
        assert judgement is not None, sample.id  # every ok edit was judged (or failed) by now
        status, error, judged = judgement["status"], judgement.get("error"), judgement
    assert status in STATUSES, status
    view = view_of(sample, protocol, category_map)
    answers = judged.get("answers") if status == "ok" else None
    metrics = protocol.sample_metrics(view, protocol.answers_of(view, judged)) if answers else None
    score = metrics[protocol.primary] if metrics else None
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
        "dimension": view.dimension if sample.category else None,  # the protocol's dimension the category maps to
        "metrics": metrics,
        "answers": answers,  # every question's answer (logits mode: its expected value)
        "subscores": None,
        "rubric": None,
        "rubric_sha256": None,
        **protocol.row_fields(view, answers),
        "rationale": judged.get("rationale"),
        "judge_parse": judged.get("parse"),  # ok | reasked | failed; null when the sample was not judged
        "judge_raw": judged.get("raw") or [],  # answers that did not parse: kept, never scored
        "digit_mass": judged.get("digit_mass"),  # logits mode: P(answering on the scale); kept when it failed
        "human_score": sample.human_score,
        "extras": {k: v for k, v in sample.fields.items() if k not in FIELD_COLUMNS},  # the format's own flags
        "flags": edit.get("flags") or [],
        "attempts": {"edit": edit.get("attempt"), "judge": judged.get("attempt")},  # see run.json "history"
    }


def baseline_edit(sample: Sample) -> dict[str, Any]:
    """A sanity baseline's "edit record": computed from the source when judged, so never stale or saved."""
    if sample.problem:
        return {"status": "invalid_input", "error": sample.problem}
    return {"status": "ok", "edited_image": None}
