"""A protocol is how a benchmark scores: the questions the judge is asked, which images each question sees,
the answer scale, how a sample's metrics follow from the answers, and how they aggregate.

A judge backend runs any protocol, in `logits` mode (the expected value over the scale's answer tokens, or
P(yes) renormalised over yes/no) or `generate` mode (a short rationale, then a JSON object of answers):

- `asks(request)` lists what one sample is asked: each `Ask` is one view (the images it shows, in order and
  labelled, and the text before its questions) with its questions. Questions of one view share the view's
  prefix: in logits mode it is prefilled once and every question is asked on its cache.
- `sample_metrics(sample, answers)` turns the answers into the sample's metrics. It runs when results are
  written (from the recorded answers), so a changed formula re-scores a resumed run without judging again.
- `aggregate` and `headline` give the report's metrics and the benchmark's own headline table.

Every prompt is this project's own wording of the benchmark's published criteria; the structure (dimensions,
scales, images shown, formulas, aggregation) follows the benchmark, with each rule's source named where it is
implemented. A parse failure is `judge_failed` in every protocol: never a fill-in value or a guess.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ..registry import PROTOCOLS
from ..report import md_cell
from ..scoring import bootstrap_ci


@dataclass(frozen=True)
class Scale:
    """An answer scale: its values (what each answer means) and the answers the judge writes for them."""

    name: str
    values: tuple[float, ...]
    answers: tuple[str, ...]  # what the judge writes for each value, in the same order
    placeholder: str  # how the JSON template shows it, e.g. "<integer 0-10>"
    instruction: str  # logits mode: the answer format asked for after the question
    strict_instruction: str  # the re-ask's

    @property
    def low(self) -> float:
        return self.values[0]

    @property
    def high(self) -> float:
        return self.values[-1]


ZERO_TO_TEN = Scale("0-10", tuple(float(v) for v in range(11)), tuple(str(v) for v in range(11)), "<integer 0-10>",
                    "Answer with a single integer from 0 to 10 and nothing else.",
                    "Your reply must be exactly one integer from 0 to 10, for example 7: no words, no punctuation, "
                    "no explanation.")
ONE_TO_FIVE = Scale("1-5", (1.0, 2.0, 3.0, 4.0, 5.0), ("1", "2", "3", "4", "5"), "<integer 1-5>",
                    "Answer with a single integer from 1 to 5 and nothing else.",
                    "Your reply must be exactly one integer from 1 to 5, for example 4: no words, no punctuation, "
                    "no explanation.")
ZERO_OR_ONE = Scale("0-1", (0.0, 1.0), ("0", "1"), "<0 or 1>", "Answer with a single digit, 0 or 1, and nothing else.",
                    "Your reply must be exactly one digit, 0 or 1: no words, no punctuation, no explanation.")
YES_NO = Scale("yes-no", (0.0, 1.0), ("no", "yes"), '<"yes" or "no">', "Answer with yes or no and nothing else.",
               "Your reply must be exactly one word, yes or no: no punctuation, no explanation.")


@dataclass(frozen=True)
class Question:
    name: str  # the answer's key (in the JSON answer, the records and the rows)
    scale: Scale
    text: str


@dataclass(frozen=True)
class Ask:
    """One view of one sample: the images shown (label, image), the text before the questions, the questions."""

    view: str
    images: tuple[tuple[str, Any], ...]
    context: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Answer:
    """One question's answer: its value (the expected value in logits mode) and its distribution over the
    scale's values (one-hot in generate mode)."""

    value: float
    values: tuple[float, ...]
    distribution: tuple[float, ...]

    def probability(self, value: float) -> float:
        """P(answer == value)."""
        return sum(p for v, p in zip(self.values, self.distribution) if v == value)


@dataclass
class SampleView:
    """What a protocol knows of a sample when it asks and when it computes metrics."""

    category: str
    dimension: str  # the protocol's dimension (or rubric) the category maps to
    instruction: str
    reference_text: Optional[str] = None
    has_reference_image: bool = False
    fields: dict[str, Any] = field(default_factory=dict)  # description, rationale, explanation, format flags


@dataclass(frozen=True)
class Metric:
    name: str
    low: float
    high: float
    display: str = "{:.2f}"  # how the headline prints a mean
    scale_to_report: Optional[tuple[float, float]] = None  # (a, b): the report shows a + b * mean


class Protocol(ABC):
    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    primary: ClassVar[str] = "score"  # a row's `score` and the report's `mean`
    answer_names: ClassVar[tuple[str, ...]] = ()  # every question any sample may be asked (the rows' columns)
    dimensions: ClassVar[tuple[str, ...]] = ()  # what categories map to; () = categories are not used
    default_dimension: ClassVar[str] = "default"
    category_defaults: ClassVar[dict[str, str]] = {}  # known benchmarks' category names -> dimension

    def __init__(self, judge_cfg: Any, rubrics: Any = None):
        self.judge_cfg = judge_cfg
        self.rubrics = rubrics

    # --- what is asked ----------------------------------------------------------------------------

    @abstractmethod
    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        """What the judge is asked about one sample; `images`: "source", "edited" and, if any, "reference"."""

    def questions(self, sample: SampleView) -> dict[str, Question]:
        """Every question a complete judgement of this sample answers (no images needed)."""
        return {q.name: q for ask in self.asks(sample, {"source": None, "edited": None, "reference": None})
                for q in ask.questions}

    def texts(self) -> list[str]:
        """Every fixed prompt text of the protocol (for its digest)."""
        return []

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for text in self.texts():
            h.update(b"\0" + text.encode("utf-8"))
        return h.hexdigest()

    def dimension_of(self, category: str, category_map: dict[str, str]) -> Optional[str]:
        """The dimension a dataset category maps to (case-insensitive; the user's map first), or None."""
        key = category.strip().lower()
        user = {k.strip().lower(): v for k, v in category_map.items()}
        for candidate in (user.get(key), key, self.category_defaults.get(key)):
            if candidate is not None and candidate.strip().lower() in self.known_dimensions():
                return candidate.strip().lower()
        return None

    def known_dimensions(self) -> set[str]:
        return set(self.dimensions)

    # --- what the answers mean --------------------------------------------------------------------

    @abstractmethod
    def sample_metrics(self, sample: SampleView, answers: dict[str, Answer]) -> dict[str, Optional[float]]:
        """The sample's metrics (None where a metric does not apply to it)."""

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """metric -> {"mean", "ci95", "count"} over the scored rows that have it: the mean of the per-sample
        values (pooled over samples), on the scale the report shows."""
        out = {}
        for metric in self.metrics:
            values = [r["metrics"][metric.name] for r in rows if r["status"] == "ok"
                      and (r.get("metrics") or {}).get(metric.name) is not None]
            mean = sum(values) / len(values) if values else None
            ci = bootstrap_ci(values)
            a, b = metric.scale_to_report or (0.0, 1.0)
            out[metric.name] = {"mean": None if mean is None else a + b * mean,
                                "ci95": None if ci is None else [a + b * ci[0], a + b * ci[1]],
                                "count": len(values)}
        return out

    def headline(self, report: dict[str, Any]) -> list[str]:
        """The benchmark's own headline table (Markdown lines), from report["metrics"]; by default one row per
        category and overall, one column per metric with its 95% CI."""
        names = [m.name for m in self.metrics]
        lines = ["| category | " + " | ".join(names) + " | n |", "|---|" + "---:|" * (len(names) + 1)]
        rows = [*((md_cell(c), s) for c, s in report["categories"].items()), ("**overall**", report["overall"])]
        for label, stats in rows:
            cells = [format_metric(stats["metrics"].get(n), self.metric(n)) for n in names]
            count = max((stats["metrics"][n]["count"] for n in names if stats["metrics"].get(n)), default=0)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {count} |")
        return lines

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def row_fields(self, sample: SampleView, answers: Optional[dict[str, float]]) -> dict[str, Any]:
        """Protocol-specific keys of a results row (the default protocol's rubric and sub-scores)."""
        return {}

    def report_extras(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, Any]:
        """More of the benchmark's own aggregation for report.json (GEdit-Bench's per-language averages)."""
        return {}

    def answers_of(self, sample: SampleView, record: dict[str, Any]) -> dict[str, Answer]:
        """A judge record's answers, with their scales, for `sample_metrics`."""
        questions = self.questions(sample)
        return {name: Answer(value, questions[name].scale.values, tuple(record["distributions"][name]))
                for name, value in record["answers"].items()}


def format_metric(stats: Optional[dict[str, Any]], metric: Metric) -> str:
    if not stats or stats["mean"] is None:
        return "–"
    text = metric.display.format(stats["mean"])
    if stats["ci95"]:
        text += " [" + ", ".join(metric.display.format(v) for v in stats["ci95"]) + "]"
    return text


def expected(values: Sequence[float], distribution: Sequence[float]) -> float:
    return sum(v * p for v, p in zip(values, distribution))


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def sqrt_product(a: float, b: float) -> float:
    return math.sqrt(max(a, 0.0) * max(b, 0.0))


def view_of(sample: Any, protocol: Protocol, category_map: dict[str, str]) -> SampleView:
    """What `protocol` sees of a dataset `Sample`: its category mapped to one of the protocol's dimensions
    (else the protocol's default), its text, and its extra fields."""
    return SampleView(category=sample.category,
                      dimension=protocol.dimension_of(sample.category, category_map) or protocol.default_dimension,
                      instruction=sample.instruction, reference_text=sample.reference_text,
                      has_reference_image=sample.reference_image is not None, fields=dict(sample.fields))


def unmapped_categories(categories: set[str], protocol: Protocol, category_map: dict[str, str]) -> list[str]:
    """The categories that map to none of the protocol's dimensions (they use its default)."""
    if not protocol.known_dimensions():
        return []
    return sorted(c for c in categories if c and protocol.dimension_of(c, category_map) is None)


def register_protocol(name: str):
    """`@register_protocol("name")`: the class is the protocol `name` (bench_lib.registry.PROTOCOLS)."""
    return PROTOCOLS.decorator(name)
