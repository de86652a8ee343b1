"""Aggregate results rows into the per-category report (report.json) and its Markdown form (report.md)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Optional

STAGES = ("load_editor", "edit", "switch", "judge")
# per-rank counters of the samples a stage processed, for its samples/s
STAGE_COUNTS = {"edit": "edited", "judge": "judged"}


def score_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """mean, std (sample standard deviation, n-1; null below 2 scores), count (scored), failed (status != ok),
    flagged (rows with a suspicious edit: NaN/inf pixels or a constant image; they are still scored)."""
    scores = [r["score"] for r in rows if r["status"] == "ok"]
    count = len(scores)
    mean = sum(scores) / count if count else None
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (count - 1)) if count >= 2 else None
    statuses = Counter(r["status"] for r in rows if r["status"] != "ok")
    flags = Counter(flag for r in rows for flag in r.get("flags") or [])
    return {"mean": mean, "std": std, "count": count, "failed": sum(statuses.values()),
            "failed_by_status": dict(sorted(statuses.items())),
            "flagged": sum(bool(r.get("flags")) for r in rows), "flags": dict(sorted(flags.items()))}


def timing_summary(per_rank: list[dict[str, float]]) -> dict[str, Any]:
    """Wall time of each stage (the slowest rank's: ranks meet at barriers), and samples/s of the edit and
    judge stages: samples the stage processed on all ranks over its wall time."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        wall = max(t[stage] for t in per_rank)
        out[f"{stage}_s"] = round(wall, 3)
        if stage in STAGE_COUNTS:
            done = sum(t[STAGE_COUNTS[stage]] for t in per_rank)
            out[f"{stage}_samples"] = done
            out[f"{stage}_samples_per_s"] = round(done / wall, 4) if wall > 0 and done else None
    out["per_rank"] = [{k: round(v, 3) for k, v in t.items()} for t in per_rank]
    return out


def build_report(rows: list[dict[str, Any]], *, timings: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    categories = sorted({r["category"] for r in rows})
    return {
        "overall": score_stats(rows),
        "categories": {c: score_stats([r for r in rows if r["category"] == c]) for c in categories},
        "timings": timings,
        "meta": meta,
    }


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    meta, timings = report["meta"], report["timings"]
    lines = [
        "# Benchmark report",
        "",
        f"- dataset: `{meta['dataset']}` ({meta['num_samples']} samples"
        + (f", the first {meta['limit']} rows" if meta.get("limit") else "") + ")",
        f"- editor: `{meta['editor_model']}`",
        f"- judge: `{meta['judge_model']}`",
        f"- processes: {meta['world_size']}, seed: {meta['seed']}",
        "",
        "Scores are 0-10 (the judge's expected score). `std` is the sample standard deviation; `count` is the "
        "number of scored samples; `failed` counts samples whose status is not `ok` (never in a mean); "
        "`flagged` counts edits with NaN/inf pixels or a single colour (still scored: look at them).",
        "",
        "| category | mean | std | count | failed | flagged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, stats in [*report["categories"].items(), ("**overall**", report["overall"])]:
        lines.append(f"| {name} | {_fmt(stats['mean'])} | {_fmt(stats['std'])} | {stats['count']} | "
                     f"{stats['failed']} | {stats['flagged']} |")
    lines += ["", "| stage | wall time (s) | samples | samples/s |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {_fmt(timings[f'{stage}_s'], 1)} | {timings.get(f'{stage}_samples', '–')} | "
                     f"{_fmt(timings.get(f'{stage}_samples_per_s'), 3)} |")
    failures = report["overall"]["failed_by_status"]
    if failures:
        lines += ["", "Failures by status: " + ", ".join(f"`{k}` {v}" for k, v in failures.items())
                  + " (see `error` in results.jsonl)."]
    return "\n".join(lines) + "\n"
