"""Aggregate results rows into the per-category report (report.json) and its Markdown form (report.md)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Optional

from .config import SUBSCORES
from .scoring import agreement

STAGES = ("load_editor", "edit", "switch", "judge")
# per-rank counters of the samples a stage processed, for its samples/s
STAGE_COUNTS = {"edit": "edited", "judge": "judged"}


def score_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """mean, std (sample standard deviation, n-1; null below 2 scores), count (scored), failed (status != ok),
    flagged (rows with a suspicious edit: NaN/inf pixels or a constant image; they are still scored),
    subscores (the mean of each sub-score over the scored rows), judge parse counts over the judged rows."""
    scored = [r for r in rows if r["status"] == "ok"]
    scores = [r["score"] for r in scored]
    count = len(scores)
    mean = sum(scores) / count if count else None
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (count - 1)) if count >= 2 else None
    statuses = Counter(r["status"] for r in rows if r["status"] != "ok")
    flags = Counter(flag for r in rows for flag in r.get("flags") or [])
    parses = Counter(r.get("judge_parse") for r in rows if r.get("judge_parse"))
    judged = sum(parses.values())
    return {"mean": mean, "std": std, "count": count, "failed": sum(statuses.values()),
            "failed_by_status": dict(sorted(statuses.items())),
            "flagged": sum(bool(r.get("flags")) for r in rows), "flags": dict(sorted(flags.items())),
            "subscores": {name: (sum(r["subscores"][name] for r in scored) / count if count else None)
                          for name in SUBSCORES},
            "judged": judged, "reasked": parses["reasked"], "parse_failed": parses["failed"],
            "parse_failure_rate": parses["failed"] / judged if judged else None}


def human_agreement(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Spearman and Kendall rank agreement between the judge's score and the dataset's human score, per
    category and overall, over the scored rows that have a human score. None when no row has one."""
    if not any(r.get("human_score") is not None for r in rows):
        return None
    def pairs(selected):
        return [(r["score"], r["human_score"]) for r in selected
                if r["status"] == "ok" and r.get("human_score") is not None]
    categories = sorted({r["category"] for r in rows})
    return {"overall": agreement(pairs(rows)),
            "categories": {c: agreement(pairs([r for r in rows if r["category"] == c])) for c in categories}}


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


def build_report(rows: list[dict[str, Any]], *, timings: dict[str, Any], meta: dict[str, Any],
                 baselines: Optional[dict[str, list[dict[str, Any]]]] = None) -> dict[str, Any]:
    categories = sorted({r["category"] for r in rows})
    return {
        "baselines": {name: {"overall": score_stats(brows),
                             "categories": {c: score_stats([r for r in brows if r["category"] == c]) for c in categories}}
                      for name, brows in (baselines or {}).items()},
        "overall": score_stats(rows),
        "categories": {c: score_stats([r for r in rows if r["category"] == c]) for c in categories},
        "human_agreement": human_agreement(rows),
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
        f"- judge: `{meta['judge_model']}` ({meta['judge_mode']} mode)",
        f"- score: {meta['score_formula']} = {meta['score_formula_text']} of the sub-scores instruction (I), "
        "consistency (C) and quality (Q)",
        f"- processes: {meta['world_size']}, seed: {meta['seed']}",
        "",
        "Scores are 0-10. `std` is the sample standard deviation; `count` is the number of scored samples; "
        "`failed` counts samples whose status is not `ok` (never in a mean); `flagged` counts edits with NaN/inf "
        "pixels or a single colour (still scored: look at them); `unparsed` is the share of judged samples whose "
        "answer did not parse even when asked again (they are `judge_failed`).",
        "",
        "| category | score | std | I | C | Q | count | failed | flagged | unparsed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, stats in [*report["categories"].items(), ("**overall**", report["overall"])]:
        sub = stats["subscores"]
        rate = stats["parse_failure_rate"]
        lines.append(f"| {name} | {_fmt(stats['mean'])} | {_fmt(stats['std'])} | {_fmt(sub['instruction'])} | "
                     f"{_fmt(sub['consistency'])} | {_fmt(sub['quality'])} | {stats['count']} | {stats['failed']} | "
                     f"{stats['flagged']} | {'–' if rate is None else f'{100 * rate:.0f}%'} |")
    baselines = report.get("baselines") or {}
    if baselines:
        names = list(baselines)
        lines += ["", "Sanity baselines, judged by the same judge: identity returns the source unchanged, blank a "
                  "uniform grey image. A trustworthy judge scores both far below a real editor.", "",
                  "| category | editor | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
        for name, stats in [*report["categories"].items(), ("**overall**", report["overall"])]:
            key = None if name == "**overall**" else name
            cells = [_fmt((baselines[b]["overall"] if key is None else baselines[b]["categories"][key])["mean"])
                     for b in names]
            lines.append(f"| {name} | {_fmt(stats['mean'])} | " + " | ".join(cells) + " |")
    agreement = report.get("human_agreement")
    if agreement:
        lines += ["", "Agreement of the judge's score with the human scores (rank correlations over the scored "
                  "samples that have a human score):", "",
                  "| category | n | Spearman | Kendall tau-b |", "|---|---:|---:|---:|"]
        for name, stats in [*agreement["categories"].items(), ("**overall**", agreement["overall"])]:
            lines.append(f"| {name} | {stats['n']} | {_fmt(stats['spearman'], 3)} | "
                         f"{_fmt(stats['kendall_tau_b'], 3)} |")
    lines += ["", "| stage | wall time (s) | samples | samples/s |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {_fmt(timings[f'{stage}_s'], 1)} | {timings.get(f'{stage}_samples', '–')} | "
                     f"{_fmt(timings.get(f'{stage}_samples_per_s'), 3)} |")
    failures = report["overall"]["failed_by_status"]
    if failures:
        lines += ["", "Failures by status: " + ", ".join(f"`{k}` {v}" for k, v in failures.items())
                  + " (see `error` in results.jsonl)."]
    return "\n".join(lines) + "\n"
