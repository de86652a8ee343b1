"""A protocol is how a benchmark scores: the questions the judge is asked, which images each question sees,
the answer scale, how a sample's metrics follow from the answers, and how they aggregate.

Every judge backend serves every protocol: the protocol says what is asked, the backend only answers, in
`logits` mode (the expected value over the scale's answer tokens, or P(yes) renormalised over yes/no) or
`generate` mode (by default a short rationale, then a JSON object of answers):

- `asks(sample, images)` lists what one sample is asked: each `Ask` is one view (the images it shows, in order
  and labelled, and the text before its questions) with its questions; `requests` turns them into the judge
  contract's `JudgeRequest`s, with the protocol's `system_prompt` and `answer_format` (bench_lib.judging).
  Questions of one view share the view's prefix: in logits mode a backend may prefill it once.
- `sample_metrics(sample, answers)` turns the answers into the sample's metrics. It runs when results are
  written (from the recorded answers), so a changed formula re-scores a resumed run without judging again.
- `metrics` declares each metric (range, reported scale, direction, the primary one); `aggregate` and
  `headline` give the report's metrics and the benchmark's own headline (a structure the report renders).

Every prompt is this project's own wording of the benchmark's published criteria; the structure (dimensions,
scales, images shown, formulas, aggregation) follows the benchmark, with each rule's source named where it is
implemented. With `judge_prompts` the prompts are the benchmark's own texts, read from its files at run time
(`verbatim_names`, bench_lib.prompt_files). A parse failure is `judge_failed` in every protocol: never a fill-in
value or a guess, unless `failure_policy: reference` asks for the benchmark's own rule (`fill_failure`,
`failed_metrics`; applied when results are written, every filled value counted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ..config import DEFAULT_JUDGE_MAX_PIXELS, ConfigError
from ..judging import (  # noqa: F401  (the scales and questions protocols declare; re-exported for them)
    ONE_TO_FIVE,
    RATIONALE_THEN_JSON,
    YES_NO,
    ZERO_OR_ONE,
    ZERO_TO_TEN,
    AnswerFormat,
    ImagePart,
    JudgeRequest,
    Question,
    Scale,
    TextPart,
)
from ..metrics import Block, Label, Metric, Table
from ..registry import PROTOCOLS
from ..scoring import bootstrap_ci, macro_mean


@dataclass(frozen=True)
class Ask:
    """One view of one sample: the images shown (label, image), the text before the questions, the questions.
    A view asked in a benchmark's own words (verbatim prompts) carries its own answer format, shows its images
    without labels (label "") and may put its text first, as the benchmark sends it."""

    view: str
    images: tuple[tuple[str, Any], ...]
    context: str
    questions: tuple[Question, ...]
    answer_format: Optional[AnswerFormat] = None  # None: the protocol's
    text_first: bool = False

    def request(self, *, system: Optional[str] = None,
                answer_format: AnswerFormat = RATIONALE_THEN_JSON) -> JudgeRequest:
        """What the judge is shown and asked: each image after its label (if any), and the view's text after the
        images (or before them)."""
        content = tuple(part for label, image in self.images
                        for part in ((TextPart(label),) if label else ()) + (ImagePart(image),))
        content = (TextPart(self.context), *content) if self.text_first else (*content, TextPart(self.context))
        return JudgeRequest(self.view, system, content, self.questions, self.answer_format or answer_format)


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
class SampleFacts:
    """One sample as the protocol sees it, prepared once per run: its view (category mapped to a dimension, text,
    fields) and every question a complete judgement of it answers."""

    view: SampleView
    questions: dict[str, Question]


class Protocol(ABC):
    name: ClassVar[str] = ""
    # Every metric the protocol reports, in the order tables show them. The one declared `primary=True` (else the
    # one named "score") is a row's `score` and the report's `mean`.
    metrics: ClassVar[tuple[Metric, ...]] = ()
    answer_names: ClassVar[tuple[str, ...]] = ()  # every question any sample may be asked (the rows' columns)
    dimensions: ClassVar[tuple[str, ...]] = ()  # what categories map to; () = categories are not used
    system_prompt: ClassVar[Optional[str]] = None  # what every request's system turn says (None: no system turn)
    answer_format: ClassVar[AnswerFormat] = RATIONALE_THEN_JSON  # how answers are asked for and read
    default_dimension: ClassVar[str] = "default"
    category_defaults: ClassVar[dict[str, str]] = {}  # known benchmarks' category names -> dimension

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("primary"), str):
            raise TypeError(f"{cls.__name__}: declare the primary metric with Metric(..., primary=True), not "
                            f"`primary = {cls.__dict__['primary']!r}`")
        if cls.metrics:
            primary_metric(cls.metrics, cls.__name__)  # raises when it is not one metric

    # A benchmark's own prompt file (`judge_prompts`): the file's path in the benchmark's repository (found under a
    # local checkout given as `judge_prompts`), and how the file's texts are filled in and answered.
    prompt_file_member: ClassVar[Optional[str]] = None
    # How the benchmark sends images to its judge, applied with its verbatim prompts unless `judge_max_pixels` is
    # set: "full" (as they are), or "long_side:N" (shrunk, aspect kept, to fit N x N, as PIL's thumbnail does).
    image_rule: ClassVar[str] = "full"

    def __init__(self, judge_cfg: Any, rubrics: Any = None, prompts: Any = None):
        self.judge_cfg = judge_cfg
        self.rubrics = rubrics
        self.prompt_file = prompts  # a bench_lib.prompt_files.PromptFile, or None: the project's own wording
        self.verbatim: Optional[dict[str, str]] = None
        if prompts is not None:
            if self.prompt_file_member is None:
                raise ConfigError(f"protocol {self.name!r} has no benchmark prompt file to read: `judge_prompts` "
                                  "applies to re_edit, risebench, kris and viescore.")
            self.verbatim = {name: prompts.text(name) for name in self.verbatim_names()}
            self.check_verbatim()

    def max_pixels(self, judge_cfg: Any) -> Optional[int]:
        """The pixel limit images are scaled down to (None: the benchmark's own rule, `image_rule`)."""
        if judge_cfg.judge_max_pixels is not None:
            return judge_cfg.judge_max_pixels
        return None if self.verbatim is not None else DEFAULT_JUDGE_MAX_PIXELS

    def fit_image(self, image: Any, limit: Optional[int]) -> Any:
        """An image as the judge is sent it: at most `limit` pixels (`max_pixels`), or None: the benchmark's own
        rule (`image_rule`)."""
        if limit is not None:
            return fit_pixels(image, limit)
        if self.image_rule.startswith("long_side:"):
            side = int(self.image_rule.split(":")[1])
            if max(image.size) > side:
                image = image.copy()
                image.thumbnail((side, side))
        return image

    def image_rule_text(self, judge_cfg: Any) -> str:
        limit = self.max_pixels(judge_cfg)
        return f"at most {limit} pixels" if limit is not None else self.image_rule

    def verbatim_names(self) -> list[str]:
        """The names of the texts the protocol takes from its benchmark's prompt file."""
        return []

    def check_verbatim(self) -> None:
        """Checks of the texts taken (their placeholders); a ConfigError names what is wrong."""

    def check_mode(self, mode: str) -> None:
        """Verbatim prompts in logits mode: every view's answer format must have a reply layout (the text up to
        each score supplied, or generated where free text comes first: bench_lib.judging.VerbatimFormat); a view
        whose format has none is refused by name, before any model loads."""
        if self.verbatim is None or mode != "logits":
            return
        for ask in self.probe_asks():
            try:
                (ask.answer_format or self.answer_format).reply_layout(ask.questions)
            except ValueError as err:
                raise ConfigError(f"`judge_prompts` with protocol {self.name!r}: the {ask.view!r} view's answer "
                                  f"format cannot be read in logits mode ({err}); use `judge_mode: generate`.") \
                    from None

    def probe_asks(self) -> list[Ask]:
        """One ask per view the protocol may send (each dimension, with and without a reference image; no images),
        for checks made before any sample is read."""
        out: dict[str, Ask] = {}
        for dimension in self.dimensions or (self.default_dimension,):
            for reference in (False, True):
                view = SampleView(category=dimension, dimension=dimension, instruction="", reference_text="",
                                  has_reference_image=reference)
                try:
                    asks = self.asks(view, {"source": None, "edited": None, "reference": None})
                except (KeyError, IndexError, ValueError):  # a text that does not fill in: the sample's own error
                    continue
                for ask in asks:
                    out.setdefault(f"{ask.view}/{ask.answer_format!r}/{[q.name for q in ask.questions]}", ask)
        return list(out.values())

    def fill_failure(self, sample: SampleView, questions: dict[str, Question], partial: dict[str, float],
                     seed: int) -> Optional[tuple[dict[str, float], dict[str, int]]]:
        """failure_policy `reference`: a judgement that did not parse completely, as the benchmark counts it:
        (answers with the benchmark's fill-ins, {"filled"|"guessed"|"dropped": number of values}), or None when
        the benchmark leaves the sample out (it stays judge_failed). `partial`: the answers that did parse;
        `seed`: the sample's (for a benchmark that guesses)."""
        return None

    # failure_policy `reference`: the benchmark scores a sample whose edit is missing (edit_failed) on its source
    # image instead (RE-Edit); the judge is then shown the source as the edit, and the report counts each one.
    missing_edit_on_source: ClassVar[bool] = False

    # Whether the views show the judge every source image of a sample that has several (`images["sources"]`):
    # under a protocol that shows one, such a sample is invalid_input (`one_source_only`), never judged against
    # its first source alone.
    several_sources: ClassVar[bool] = False

    def left_out(self, sample: SampleView) -> Optional[str]:
        """failure_policy `reference`: why the benchmark's own loader would not read this sample (its row is then
        invalid_input, saying so, and the report counts it), or None."""
        return None

    def failed_metrics(self, sample: SampleView) -> Optional[dict[str, Optional[float]]]:
        """failure_policy `reference`: the metrics a judge_failed sample still counts with (RISEBench: 0 in
        accuracy), or None."""
        return None

    @property
    def primary(self) -> Metric:
        """The headline metric: a row's `score`, the report's `mean`, the sweep's and the chart's metric."""
        return primary_metric(self.metrics, type(self).__name__)

    # --- what is asked ----------------------------------------------------------------------------

    @abstractmethod
    def asks(self, sample: SampleView, images: dict[str, Any]) -> list[Ask]:
        """What the judge is asked about one sample; `images`: "source", "edited", "reference" (None when the
        sample has none) and "sources": every source image in the data's order ("source" is the first)."""

    def requests(self, sample: SampleView, images: dict[str, Any]) -> list[JudgeRequest]:
        """What the judge backend is sent about one sample: one request per ask (view), in order."""
        return [ask.request(system=self.system_prompt, answer_format=self.answer_format)
                for ask in self.asks(sample, images)]

    def questions(self, sample: SampleView) -> dict[str, Question]:
        """Every question a complete judgement of this sample answers (no images needed)."""
        return {q.name: q for ask in self.asks(sample, {"source": None, "edited": None, "reference": None,
                                                        "sources": ()})
                for q in ask.questions}

    def facts(self, sample: Any, category_map: dict[str, str]) -> SampleFacts:
        """What the protocol derives from a dataset `Sample` (its view and questions): computed once per run."""
        view = view_of(sample, self, category_map)
        return SampleFacts(view, self.questions(view))

    def texts(self) -> list[str]:
        """Every fixed prompt text of the protocol (for its digest)."""
        return []

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        if self.verbatim is not None:  # the benchmark's own texts: never the same prompts as the paraphrase
            h.update(b"\0verbatim\0" + self.prompt_file.sha256.encode())
            texts = [f"{name}\0{text}" for name, text in sorted(self.verbatim.items())]
        else:
            texts = self.texts()
        for text in texts:
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
            # the ok rows' values (failure_policy reference: also a failed row's value its benchmark counts)
            values = [r["metrics"][metric.name] for r in rows if (r.get("metrics") or {}).get(metric.name) is not None]
            mean = sum(values) / len(values) if values else None
            ci = bootstrap_ci(values)
            out[metric.name] = {"mean": metric.shown(mean),
                                "ci95": None if ci is None else [metric.shown(ci[0]), metric.shown(ci[1])],
                                "count": len(values)}
        return out

    def macro_aggregate(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, dict[str, Any]]:
        """metric -> {"mean", "ci95", "count", "categories"}: the unweighted mean of the category means (over the
        categories with a value), its interval resampling within each category, on the scale the report shows."""
        out = {}
        for metric in self.metrics:
            groups = {c: v for c in categories if (v := [r["metrics"][metric.name] for r in rows if r["category"] == c
                                                         and (r.get("metrics") or {}).get(metric.name) is not None])}
            mean, ci = macro_mean(groups)
            out[metric.name] = {"mean": metric.shown(mean),
                                "ci95": None if ci is None else [metric.shown(ci[0]), metric.shown(ci[1])],
                                "count": sum(len(v) for v in groups.values()), "categories": len(groups)}
        return out

    def headline(self, report: dict[str, Any]) -> list[Block]:
        """The benchmark's own headline (tables and paragraphs the report renders), from report["metrics"]; by
        default one row per category and overall, one column per metric with its 95% CI. [] = the report's own
        table is the headline."""
        rows = [*report["categories"].items(), (Label("overall"), report["overall"])]
        return [Table(("category", *(m.name for m in self.metrics), "n"),
                      tuple((label, *(m.format(stats["metrics"].get(m.name)) for m in self.metrics),
                             str(metric_count(stats["metrics"], self.metrics))) for label, stats in rows))]

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def row_fields(self, sample: SampleView, metrics: Optional[dict[str, Optional[float]]]) -> dict[str, Any]:
        """Protocol-specific keys of a results row (the default protocol's rubric and sub-scores), from the
        sample's metrics (None unless it was scored)."""
        return {}

    def report_extras(self, rows: list[dict[str, Any]], categories: list[str]) -> dict[str, Any]:
        """More of the benchmark's own aggregation for report.json (GEdit-Bench's per-language averages)."""
        return {}

    def answers_of(self, questions: dict[str, Question], record: dict[str, Any]) -> dict[str, Answer]:
        """A judge record's answers, with their scales (`questions`: the sample's, `SampleFacts.questions`), for
        `sample_metrics`."""
        return {name: Answer(value, questions[name].scale.values, tuple(record["distributions"][name]))
                for name, value in record["answers"].items()}


def one_source_only(samples: list[Any], protocol: Protocol) -> list[Any]:
    """The samples as `protocol` can judge them: one with several source images is invalid_input, saying why,
    under a protocol whose views show one source (its consistency and instruction questions would compare the
    edit, made from all of them, with the first alone)."""
    if protocol.several_sources:
        return samples
    return [dataclasses.replace(s, problem=f"the sample has {len(s.sources)} source images and protocol "
                                           f"{protocol.name!r} shows the judge one; it is judged only by a protocol "
                                           "that shows every source (kris)")
            if len(s.sources) > 1 and not s.problem else s for s in samples]


def fit_pixels(image: Any, max_pixels: int) -> Any:
    """Downscale (aspect kept, high-quality filter) to at most `max_pixels`; smaller images are unchanged."""
    from PIL import Image

    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def primary_metric(metrics: Sequence[Metric], owner: str = "protocol") -> Metric:
    """The metric declared `primary=True`, else the one named "score"; anything but exactly one is a TypeError."""
    flagged = [m for m in metrics if m.primary] or [m for m in metrics if m.name == "score"]
    if len(flagged) != 1:
        raise TypeError(f"{owner} must declare exactly one primary metric (Metric(..., primary=True), or one named "
                        f"'score'); it has {[m.name for m in flagged] or 'none'} among {[m.name for m in metrics]}")
    return flagged[0]


def metric_count(stats: dict[str, Any], metrics: Sequence[Metric]) -> int:
    """The samples behind a table row: the most any of its metrics counted."""
    return max((stats[m.name]["count"] for m in metrics if stats.get(m.name)), default=0)


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
