"""What a metric is and how numbers are shown: a `Metric` declares its range, the scale the report shows it on,
how it is printed and which direction is better; report, chart, comparison and sweep read these declarations and
assume nothing else (no 0-10). A protocol's headline is a structure (`Table`s and paragraphs) that the report
renders, so protocols never write Markdown. Imports no other module of the harness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

NO_VALUE = "–"  # how every table shows a missing number


def fmt(value: Optional[float], digits: int = 2) -> str:
    """A number with `digits` decimals, or "–" when there is none."""
    return NO_VALUE if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Metric:
    """One metric of a protocol. `low`-`high` is a sample's range; the report shows means (and intervals) as
    `a + b * value` with `scale_to_report` = (a, b) (KRIS's 0-100, RE-Edit's %), printed with `display`."""

    name: str
    low: float
    high: float
    display: str = "{:.2f}"  # how the headline prints a mean
    scale_to_report: Optional[tuple[float, float]] = None  # (a, b): the report shows a + b * value
    higher_is_better: bool = True
    primary: bool = False  # the protocol's headline metric: a row's `score` (one per protocol)

    def shown(self, value: Optional[float]) -> Optional[float]:
        """A value (per sample, a mean or an interval's bound) on the scale the report shows. The only place that
        applies `scale_to_report`."""
        if value is None:
            return None
        a, b = self.scale_to_report or (0.0, 1.0)
        return a + b * value

    @property
    def shown_range(self) -> tuple[float, float]:
        """The range the report's numbers of this metric lie in (lowest first)."""
        ends = (self.shown(self.low), self.shown(self.high))
        return min(ends), max(ends)

    def format(self, stats: Optional[dict[str, Any]]) -> str:
        """A report entry ({"mean", "ci95", ...}, already on the shown scale) as "mean [low, high]"."""
        if not stats or stats["mean"] is None:
            return NO_VALUE
        text = self.display.format(stats["mean"])
        if stats["ci95"]:
            text += " [" + ", ".join(self.display.format(v) for v in stats["ci95"]) + "]"
        return text

    def declaration(self) -> dict[str, Any]:
        """What report.json records of the metric (`protocol.metrics`): enough to rebuild it with `recorded`."""
        return {"range": [self.low, self.high], "reported_as": self.scale_to_report}

    @classmethod
    def recorded(cls, name: str, declaration: dict[str, Any]) -> Metric:
        """The metric as a run's report.json recorded it (`declaration`): a run is read by what it says of itself,
        whichever version of the harness wrote it."""
        low, high = declaration["range"]
        scale = declaration.get("reported_as")
        return cls(name, low, high, scale_to_report=tuple(scale) if scale else None)


# --- the structure of a headline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """A label the harness writes (never data): shown in bold, then `note` as plain text."""

    text: str
    note: str = ""


Cell = Union[str, Label]  # str: text from the data or a formatted number, escaped when rendered


@dataclass(frozen=True)
class Table:
    """A table of a headline: the first `label_columns` columns are labels (left-aligned), the rest numbers."""

    columns: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]
    label_columns: int = 1


Block = Union[str, Table]  # a paragraph (text, escaped when rendered) or a table
