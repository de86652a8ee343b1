"""A `results.jsonl` row, built in one place for the editor's rows and the sanity baselines' alike.

The first keys are the output contract (id, category, instruction, status, score, edited_image, error, seed);
the rest come from the judge and the protocol, the dataset and the run's records.
"""

from __future__ import annotations

from typing import Any, Optional

from .data import FIELD_COLUMNS, Sample
from .protocols import Protocol
from .protocols.base import SampleFacts
from .scoring import SUBSCORES

STATUSES = ("ok", "invalid_input", "edit_failed", "judge_failed")

# The declared type of every results.jsonl column: "string", "float64", "int64", a list ["string"], or a dict
# of sub-columns. Numbers are float whatever JSON would infer (3 vs 3.0); ids and every text are strings
# ("0" stays "0"); every key is present on every row, null when it does not apply, so a column that is null on
# every row of one run still has its type. `results_features` gives it as `datasets.Features`.
_FIXED: dict[str, Any] = {
    "id": "string", "category": "string", "instruction": "string", "status": "string", "score": "float64",
    "edited_image": "string", "error": "string", "seed": "int64", "dimension": "string",
    "metrics": None, "answers": None,  # the protocol's metric and question names (see `results_schema`)
    "subscores": {name: "float64" for name in SUBSCORES}, "rubric": "string", "rubric_sha256": "string",
    "rationale": "string", "judge_parse": "string", "judge_raw": ["string"], "digit_mass": None,
    "human_score": "float64", "extras": None, "flags": ["string"], "attempts": {"edit": "int64", "judge": "int64"},
    "judge_tokens": {"prompt": "int64", "completion": "int64"},
}


FILLS = ("filled", "guessed", "dropped", "zeroed")  # failure_policy reference: how unparsed values were counted
# failure_policy reference, a row's flags: a missing edit scored on the source image (RE-Edit), and a record the
# benchmark's own loader does not read, left out of the scores
ON_SOURCE = "edit_missing_scored_on_source"
LEFT_OUT = "left_out_by_reference"


def results_schema(protocol: Protocol, extras: list[str], *, fills: bool = False) -> dict[str, Any]:
    """The columns of a run's results.jsonl (and baselines/*.jsonl): fixed, plus the protocol's metric and
    question names and the dataset format's own fields (`extras`, kept as text); with `fills` (failure_policy
    reference) the count of values its benchmark's rules filled in, guessed, dropped or counted as zero."""
    answers = {name: "float64" for name in protocol.answer_names}
    schema = {**_FIXED, "metrics": {m.name: "float64" for m in protocol.metrics}, "answers": answers,
              "digit_mass": dict(answers), "extras": {name: "string" for name in sorted(extras)}}
    if fills:
        schema["fills"] = {name: "int64" for name in FILLS}
    return schema


def results_features(schema: dict[str, Any]):
    """`results_schema` as `datasets.Features`, for `datasets.load_dataset("json", ..., features=...)`."""
    from datasets import Features, Value

    def feature(spec):
        if isinstance(spec, dict):
            return {name: feature(sub) for name, sub in spec.items()}
        if isinstance(spec, list):
            return [feature(spec[0])]
        return Value(spec)

    return Features({name: feature(spec) for name, spec in schema.items()})


def conform(row: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`row` in the declared types and with exactly the declared keys (in their order). A key the schema does
    not know is a bug here, not something to drop silently."""
    unknown = set(row) - set(schema)
    assert not unknown, f"results row has undeclared columns {sorted(unknown)}"
    return {name: _conform(row.get(name), spec, name) for name, spec in schema.items()}


def _conform(value: Any, spec: Any, name: str) -> Any:
    if value is None:
        return None
    if isinstance(spec, dict):
        assert isinstance(value, dict) and set(value) <= set(spec), (name, value)
        return {key: _conform(value.get(key), sub, f"{name}.{key}") for key, sub in spec.items()}
    if isinstance(spec, list):
        return [_conform(v, spec[0], name) for v in value]
    if spec == "float64":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
        return float(value)
    if spec == "int64":
        assert isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63, (name, value)
        return value
    return value if isinstance(value, str) else (str(value).lower() if isinstance(value, bool) else str(value))


def reference_fill(sample: Sample, judgement: dict[str, Any], protocol: Protocol, facts: SampleFacts,
                   seed: int) -> tuple[dict[str, Any], dict[str, int], Optional[dict[str, Optional[float]]]]:
    """failure_policy reference, for a judgement that did not parse: (the judgement as its benchmark counts it,
    the values filled in / guessed / dropped / counted as zero, the metrics it still counts with when it stays
    failed). A judge that raised, or NaN logits, is no parse failure: it stays failed, uncounted."""
    if judgement.get("status") != "judge_failed" or judgement.get("parse") != "failed":
        return judgement, {}, None
    filled = protocol.fill_failure(facts.view, facts.questions, judgement.get("partial_answers") or {}, seed)
    if filled is None:
        metrics = protocol.failed_metrics(facts.view)
        return judgement, ({"zeroed": 1} if metrics else {}), metrics
    answers, counts = filled
    # an answer the judge gave keeps its distribution (logits mode: a metric may read it, as KRIS's knowledge cap
    # does); a value the benchmark filled in is one-hot
    kept = judgement.get("partial_distributions") or {}
    partial = judgement.get("partial_answers") or {}
    distributions = {name: list(kept[name]) if name in kept and partial.get(name) == value
                     else [float(v == value) for v in facts.questions[name].scale.values]
                     for name, value in answers.items()}
    ok = {**judgement, "status": "ok", "error": None, "answers": answers, "distributions": distributions}
    return ok, counts, None


def build_row(sample: Sample, *, edit: dict[str, Any], judgement: Optional[dict[str, Any]], protocol: Protocol,
              facts: SampleFacts, failure_policy: str = "strict") -> dict[str, Any]:
    """One sample's row from its edit record and judge record (records of earlier attempts included), and what the
    protocol made of the sample (`facts`: its view and questions, prepared once per run).

    A failed edit is the row's status; an ok edit takes the judgement's status. Answers, metrics and score are
    only given for an ok sample; the metrics (and `score`, the protocol's primary metric) are computed here
    from the recorded answers, so a changed formula re-scores a resumed run without judging again. The seed is
    the one the edit record says the sample was edited with (none for a sanity baseline's image)."""
    status, error = edit["status"], edit.get("error")
    flags = list(edit.get("flags") or [])
    judged: dict[str, Any] = {}
    fills: dict[str, int] = {}
    counted: Optional[dict[str, Optional[float]]] = None
    if failure_policy == "reference" and status != "invalid_input" and (why := protocol.left_out(facts.view)):
        status, error = "invalid_input", f"left out under failure_policy reference: {why}"
        flags.append(LEFT_OUT)
    elif failure_policy == "reference" and status == "edit_failed" and protocol.missing_edit_on_source \
            and judgement is not None and judgement.get("on_source"):
        status, error = "ok", f"the edit failed ({error}); scored on the source image, as the benchmark does"
        flags.append(ON_SOURCE)
    if status == "ok":
        assert judgement is not None, sample.id  # every ok edit was judged (or failed) by now
        if failure_policy == "reference":
            judgement, fills, counted = reference_fill(sample, judgement, protocol, facts, edit.get("seed") or 0)
        note = error if ON_SOURCE in flags else None  # what the source stood in for
        status, error, judged = judgement["status"], judgement.get("error") or note, judgement
    assert status in STATUSES, status
    view = facts.view
    answers = judged.get("answers") if status == "ok" else None
    metrics = protocol.sample_metrics(view, protocol.answers_of(facts.questions, judged)) if answers else counted
    score = metrics[protocol.primary.name] if metrics and status == "ok" else None
    assert (score is not None) == (status == "ok"), (sample.id, status, score)
    row_fills = {"fills": {name: fills.get(name, 0) for name in FILLS}} if failure_policy == "reference" else {}
    return {
        "id": sample.id,
        "category": sample.category,
        "instruction": sample.instruction,
        "status": status,
        "score": score,
        "edited_image": edit.get("edited_image"),
        "error": error,
        "seed": edit.get("seed"),
        "dimension": view.dimension if sample.category else None,  # the protocol's dimension the category maps to
        "metrics": metrics,
        "answers": answers,  # every question's answer (logits mode: its expected value)
        "subscores": None,
        "rubric": None,
        "rubric_sha256": None,
        **protocol.row_fields(view, metrics),
        "rationale": judged.get("rationale"),
        "judge_parse": judged.get("parse"),  # ok | reasked | failed; null when the sample was not judged
        "judge_raw": judged.get("raw") or [],  # answers that did not parse: kept, never scored
        "digit_mass": judged.get("digit_mass"),  # logits mode: P(answering on the scale); kept when it failed
        "human_score": sample.human_score,
        "extras": {k: v for k, v in sample.fields.items() if k not in FIELD_COLUMNS},  # the format's own flags
        "flags": flags,
        "attempts": {"edit": edit.get("attempt"), "judge": judged.get("attempt")},  # see run.json "history"
        "judge_tokens": judged.get("tokens"),  # tokens the judge server charged for the sample; null: not known
        **row_fills,
    }


def baseline_edit(sample: Sample) -> dict[str, Any]:
    """A sanity baseline's "edit record": computed from the source when judged, so never stale or saved."""
    if sample.problem:
        return {"status": "invalid_input", "error": sample.problem}
    if len(sample.sources) > 1:  # a baseline takes one source: never the first of several
        return {"status": "edit_failed", "error": f"a sanity baseline takes one source image; the sample has "
                                                  f"{len(sample.sources)}"}
    return {"status": "ok", "edited_image": None}
