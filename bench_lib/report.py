"""Aggregate results rows into the per-category report (report.json) and its Markdown form (report.md)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Optional

from .config import SUBSCORES
from .metrics import NO_VALUE, Block, Label, Metric, Table, fmt
from .scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, agreement, bootstrap_ci, macro_mean

STAGES = ("load_editor", "edit", "switch", "judge")
# per-rank counters of the samples a stage processed, for its samples/s
STAGE_COUNTS = {"edit": "edited", "judge": "judged"}


def score_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """mean, ci95 (95% bootstrap interval of the mean; null below 2 scores), std (sample standard deviation,
    n-1; null below 2 scores), count (scored), failed (status != ok),
    flagged (rows with a suspicious edit: NaN/inf pixels or a constant image; they are still scored),
    subscores (the mean of each sub-score over the scored rows), judge parse counts over the judged rows."""
    scored = [r for r in rows if r["status"] == "ok"]
    with_subscores = [r for r in scored if r.get("subscores")]  # the default protocol's
    scores = [r["score"] for r in scored]
    count = len(scores)
    mean = sum(scores) / count if count else None
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (count - 1)) if count >= 2 else None
    statuses = Counter(r["status"] for r in rows if r["status"] != "ok")
    flags = Counter(flag for r in rows for flag in r.get("flags") or [])
    parses = Counter(r.get("judge_parse") for r in rows if r.get("judge_parse"))
    judged = sum(parses.values())
    ci = bootstrap_ci(scores)
    return {"mean": mean, "ci95": list(ci) if ci else None, "std": std, "count": count,
            "failed": sum(statuses.values()),
            "failed_by_status": dict(sorted(statuses.items())),
            "flagged": sum(bool(r.get("flags")) for r in rows), "flags": dict(sorted(flags.items())),
            "subscores": {name: (sum(r["subscores"][name] for r in with_subscores) / len(with_subscores)
                                 if with_subscores else None) for name in SUBSCORES},
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
    categories = categories_of(rows)
    return {"overall": agreement(pairs(rows)),
            "categories": {c: agreement(pairs([r for r in rows if r["category"] == c])) for c in categories}}


def timing_summary(per_rank: list[dict[str, float]]) -> dict[str, Any]:
    """Wall time of each stage (the slowest rank's: ranks meet at barriers), samples/s of the edit and judge
    stages (samples the stage processed on all ranks over its wall time), and per rank: edit s/image, the
    time it waited at the edit stage's barriers, the model switch, judge s/sample."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        wall = max(t[stage] for t in per_rank)
        out[f"{stage}_s"] = round(wall, 3)
        if stage in STAGE_COUNTS:
            done = sum(t[STAGE_COUNTS[stage]] for t in per_rank)
            out[f"{stage}_samples"] = done
            out[f"{stage}_samples_per_s"] = round(done / wall, 4) if wall > 0 and done else None
    out["per_rank"] = [{**{k: v if v is None else round(v, 3) for k, v in t.items()},
                        "edit_s_per_image": (round((t["edit"] - t.get("barrier_wait", 0.0)) / t["edited"], 4)
                                             if t.get("edited") else None),
                        "judge_s_per_sample": round(t["judge"] / t["judged"], 4) if t.get("judged") else None}
                       for t in per_rank]
    return out


def categories_of(rows: list[dict[str, Any]]) -> list[str]:
    """The categories a report has rows for. A row without a category (an invalid_input sample) counts in
    the overall figures only: it never makes a category named ""."""
    return sorted({r["category"] for r in rows if r.get("category")})


def with_metrics(stats: dict[str, Any], rows: list[dict[str, Any]], protocol) -> dict[str, Any]:
    if protocol is not None:
        stats["metrics"] = protocol.aggregate(rows)
    return stats


def build_report(rows: list[dict[str, Any]], *, timings: dict[str, Any], meta: dict[str, Any],
                 baselines: Optional[dict[str, list[dict[str, Any]]]] = None,
                 provenance: Optional[dict[str, Any]] = None, protocol=None) -> dict[str, Any]:
    """report.json. With a `protocol`, each category and the overall figures also carry `metrics` (every
    metric of the protocol: mean, 95% CI, count), the overall ones `macro_metrics`, and `protocol` says which."""
    categories = categories_of(rows)
    overall = with_metrics(score_stats(rows), rows, protocol)
    # The macro mean weighs every category with at least one scored sample the same (a category whose
    # samples all failed has no mean to weigh); its interval resamples within each of those categories.
    scored = {c: v for c in categories
              if (v := [r["score"] for r in rows if r["category"] == c and r["status"] == "ok"])}
    overall["macro_mean"], macro_ci = macro_mean(scored)
    overall["macro_categories"] = sorted(scored)
    overall["macro_ci95"] = list(macro_ci) if macro_ci else None
    if protocol is not None:
        overall["macro_metrics"] = protocol.macro_aggregate(rows, categories)
    report = {
        "protocol": None if protocol is None else {
            "name": protocol.name, "prompts_sha256": protocol.digest(), "primary": protocol.primary.name,
            "metrics": {m.name: m.declaration() for m in protocol.metrics}},
        "overall": overall,
        "categories": {c: with_metrics(score_stats([r for r in rows if r["category"] == c]),
                                       [r for r in rows if r["category"] == c], protocol) for c in categories},
        "uncertainty": {"method": "percentile bootstrap of the mean", "level": 0.95,
                        "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED,
                        "macro": "resampled within each category"},
        "baselines": {name: {"overall": score_stats(brows),
                             "categories": {c: score_stats([r for r in brows if r["category"] == c])
                                            for c in categories}}
                      for name, brows in (baselines or {}).items()},
        "human_agreement": human_agreement(rows),
        "timings": timings,
        "meta": meta,
        "provenance": provenance,
    }
    if protocol is not None:
        report.update(protocol.report_extras(rows, categories))
    return report


_MARKDOWN_CELL = str.maketrans({"|": "\\|", "<": "&lt;", ">": "&gt;", "`": "\\`", "\r": " ", "\n": " "})


def md_cell(text: Any) -> str:
    """Text from the data (a category, an id, a path) made safe for one Markdown table cell: a `|` can't
    split the cell, a newline can't end the row, and `<`, `>` and backticks can't become markup or code."""
    return str(text).translate(_MARKDOWN_CELL)


def md_code(text: Any) -> str:
    """A value from the config or the data as inline code, or as escaped text where a backtick or a newline
    would break the code span."""
    text = str(text)
    return md_cell(text) if "`" in text or "\n" in text or "\r" in text else f"`{text}`"


OVERALL = "**overall**"


def _label(name: str) -> str:
    return name if name == OVERALL else md_cell(name)


def md_table_cell(cell: Any) -> str:
    """A cell of a headline table: a `Label` in bold (then its note), anything else as escaped text."""
    if isinstance(cell, Label):
        return f"**{md_cell(cell.text)}**{md_cell(cell.note)}"
    return md_cell(cell)


def md_blocks(blocks: list[Block]) -> list[str]:
    """A protocol's headline (paragraphs and tables) as Markdown lines, a blank line between blocks."""
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        if isinstance(block, Table):
            numbers = len(block.columns) - block.label_columns
            lines.append("|" + "".join(f" {md_table_cell(c)} |" if c != "" else " |" for c in block.columns))
            lines.append("|" + "---|" * block.label_columns + "---:|" * numbers)
            lines += ["|" + "".join(f" {md_table_cell(c)} |" for c in row) for row in block.rows]
        else:
            lines.append(md_cell(block))
    return lines


def _memory(timings: dict[str, Any], stage: str) -> str:
    """A stage's peak memory, "allocated / reserved" in GiB (– when not measured: CPU, or an older report)."""
    allocated, reserved = timings.get(f"{stage}_max_memory_allocated"), timings.get(f"{stage}_max_memory_reserved")
    if allocated is None or reserved is None:
        return NO_VALUE
    return f"{fmt(allocated / 2**30)} / {fmt(reserved / 2**30)}"


def _ci(ci: Optional[list[float]]) -> str:
    return NO_VALUE if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def render_markdown(report: dict[str, Any], *, chart: Optional[str] = None, protocol=None) -> str:
    meta, timings, overall = report["meta"], report["timings"], report["overall"]
    own = protocol is None or not protocol.headline(report)  # the harness's own table is the headline
    if own:
        scoring = (f"- score: {meta['score_formula']} = {meta['score_formula_text']} of the sub-scores instruction "
                   "(I), consistency (C) and quality (Q)")
        columns = [("I", "instruction"), ("C", "consistency"), ("Q", "quality")]
        low, high = 0, 10
    else:
        primary = protocol.primary
        scoring = (f"- protocol: {protocol.name} (metrics {', '.join(m.name for m in protocol.metrics)}; `score` "
                   f"is {primary.name}, {primary.low:g}-{primary.high:g} per sample)")
        columns = [(m.name, m.name) for m in protocol.metrics if m.name != primary.name]
        low, high = primary.low, primary.high
    comparable = report.get("comparable")
    header = []
    if comparable and comparable.get("benchmark"):
        header = [f"**Comparable with {comparable['benchmark']}'s published table: "
                  + ("yes**" if comparable["comparable"] else f"no** ({'; '.join(comparable['differs'])})"), ""]
    counts = report.get("failure_counts")
    if counts:
        substituted = "".join(
            f"; {text} {counts[key]}" for key, text in (
                ("edits_scored_on_source", "missing edits scored on the source image (as the benchmark does)"),
                ("records_left_out", "records left out (the benchmark's own loader does not read them)"))
            if counts.get(key))
        header += [f"Unparsed judgements: {counts['unparsed_judgements']}; values filled in {counts['filled']}, "
                   f"guessed {counts['guessed']}, dropped {counts['dropped']}, counted as zero {counts['zeroed']}"
                   f"{substituted} (failure_policy {report['meta']['config'].get('failure_policy', 'strict')}).",
                   ""]
    lines = [
        "# Benchmark report",
        "",
        *header,
        f"- dataset: {md_code(meta['dataset'])} ({meta['num_samples']} samples"
        + (f", the first {meta['limit']} rows" if meta.get("limit") else "") + ")",
        f"- editor: {md_code(meta['editor_model'])}",
        f"- judge: {md_code(meta['judge_model'])} ({meta['judge_mode']} mode)",
        scoring,
        f"- processes: {meta['world_size']}, seed: {meta['seed']}",
        "",
    ]
    if not own:
        lines += [f"## {protocol.name}: the benchmark's own table", "",
                  "Means over the scored samples with 95% bootstrap intervals, on the benchmark's own scales.", "",
                  *md_blocks(protocol.headline(report)), "", "## Details", ""]
    lines += [
        f"Scores are {low:g}-{high:g}. `95% CI` is a percentile bootstrap interval of the mean "
        f"({report['uncertainty']['resamples']} resamples, seed {report['uncertainty']['seed']}); `std` is the "
        "sample standard deviation; `count` is the number of scored samples; `failed` counts samples whose "
        "status is not `ok` (never in a mean); `flagged` counts edits with NaN/inf pixels or a single colour "
        "(still scored: look at them); `unparsed` is the share of judged samples whose answer did not parse "
        "even when asked again (they are `judge_failed`).",
        "",
        "| category | score | 95% CI | std | " + " | ".join(label for label, _ in columns)
        + " | count | failed | flagged | unparsed |",
        "|---|---:|---|---:|" + "---:|" * len(columns) + "---:|---:|---:|---:|",
    ]
    for name, stats in [*report["categories"].items(), (OVERALL, overall)]:
        if own:
            cells = [fmt(stats["subscores"][key]) for _, key in columns]
        else:
            cells = [fmt((stats["metrics"].get(key) or {}).get("mean")) for _, key in columns]
        rate = stats["parse_failure_rate"]
        lines.append(f"| {_label(name)} | {fmt(stats['mean'])} | {_ci(stats['ci95'])} | {fmt(stats['std'])} | "
                     + " | ".join(cells) + f" | {stats['count']} | {stats['failed']} | {stats['flagged']} | "
                     f"{NO_VALUE if rate is None else f'{100 * rate:.0f}%'} |")
    lines += ["", f"Overall is the micro mean (every scored sample weighs the same). The macro mean (every "
              f"category with a score weighs the same) is {fmt(overall['macro_mean'])}, 95% CI "
              f"{_ci(overall['macro_ci95'])}."]
    if chart:
        lines += ["", f"![Mean score per category with 95% confidence intervals]({chart})"]
    baselines = report.get("baselines") or {}
    if baselines:
        names = list(baselines)
        lines += ["", "Sanity baselines, judged by the same judge: identity returns the source unchanged, blank a "
                  "uniform grey image. A trustworthy judge scores both far below a real editor.", "",
                  "| category | editor | " + " | ".join(md_cell(n) for n in names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for name, stats in [*report["categories"].items(), (OVERALL, overall)]:
            key = None if name == OVERALL else name
            cells = [fmt((baselines[b]["overall"] if key is None else baselines[b]["categories"][key])["mean"])
                     for b in names]
            lines.append(f"| {_label(name)} | {fmt(stats['mean'])} | " + " | ".join(cells) + " |")
    agreement = report.get("human_agreement")
    if agreement:
        lines += ["", "Agreement of the judge's score with the human scores (rank correlations over the scored "
                  "samples that have a human score):", "",
                  "| category | n | Spearman | Kendall tau-b |", "|---|---:|---:|---:|"]
        for name, stats in [*agreement["categories"].items(), (OVERALL, agreement["overall"])]:
            lines.append(f"| {_label(name)} | {stats['n']} | {fmt(stats['spearman'], 3)} | "
                         f"{fmt(stats['kendall_tau_b'], 3)} |")
    worked = timings.get("attempt")
    if worked is not None:
        lines += ["", f"Timings of attempt {worked}" + ("." if worked == meta.get("attempt") else
                  f", the last that edited or judged anything (attempt {meta.get('attempt')} reused every edit "
                  "and judgement).")]
    lines += ["", "| stage | wall time (s) | samples | samples/s |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {fmt(timings[f'{stage}_s'], 1)} | {timings.get(f'{stage}_samples', '–')} | "
                     f"{fmt(timings.get(f'{stage}_samples_per_s'), 3)} |")
    lines += ["", "Per rank: edit seconds per image (barrier waits excluded), seconds spent waiting "
              "for other ranks at the edit stage's barriers, model switch, judge seconds per sample, and the peak "
              "device memory of each stage, allocated / reserved by torch (GiB; – where not measured, on CPU).", "",
              "| rank | edited | edit s/image | barrier wait (s) | switch (s) | judged | judge s/sample | "
              "edit peak memory (GiB) | judge peak memory (GiB) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rank, t in enumerate(timings["per_rank"]):
        lines.append(f"| {rank} | {t.get('edited', 0)} | {fmt(t['edit_s_per_image'], 3)} | "
                     f"{fmt(t.get('barrier_wait'), 1)} | {fmt(t.get('switch'), 1)} | {t.get('judged', 0)} | "
                     f"{fmt(t['judge_s_per_sample'], 3)} | {_memory(t, 'edit')} | {_memory(t, 'judge')} |")
    lines += judge_usage_lines(report.get("judge_usage"))
    failures = overall["failed_by_status"]
    if failures:
        lines += ["", "Failures by status: " + ", ".join(f"`{k}` {v}" for k, v in failures.items())
                  + " (see `error` in results.jsonl)."]
    provenance = report.get("provenance")
    if provenance:
        harness = provenance["harness"]
        models = provenance["models"]
        lines += ["", "Provenance (full details in report.json): harness commit "
                  f"`{harness.get('commit') or 'unknown'}`{' (uncommitted changes)' if harness.get('dirty') else ''}; "
                  + "; ".join(f"{role} {md_code(m['id'])} at "
                              f"{md_code(m.get('resolved_revision') or m.get('config_sha256') or 'unresolved')}"
                              for role, m in models.items())
                  + f"; devices: {md_cell(', '.join(sorted(set(provenance['devices']))))}."]
    if report.get("stamp"):
        from .store import stamp_line

        lines += ["", stamp_line(report["stamp"])]
    return "\n".join(lines) + "\n"


# --- chart ---------------------------------------------------------------------------------------

CHART_FILE = "report_chart.png"
BAR_COLOUR, OVERALL_COLOUR, WHISKER_COLOUR = "#4c72b0", "#dd8452", "#1e1e1e"
CHART_DPI = 100


def chart_rows(report: dict[str, Any], metric: Metric) -> list[tuple[str, Optional[float], Optional[list[float]]]]:
    """(label, mean, ci95) per bar, on the metric's shown scale: the categories, then overall (pooled samples)."""
    rows = [*report["categories"].items(), ("overall", report["overall"])]
    out = []
    for name, stats in rows:
        entry = (stats.get("metrics") or {}).get(metric.name) or {}
        out.append((name, entry.get("mean"), entry.get("ci95")))
    return out


def chart_title(metric: Metric) -> str:
    low, high = metric.shown_range
    return f"Mean {metric.name} per category, {low:g}-{high:g} (whiskers: 95% bootstrap CI)"


def chart_figure(report: dict[str, Any], metric: Metric):
    """The report's chart as a matplotlib Figure (None when no bar has a value): one horizontal bar per category
    and one for overall, the mean of `metric` (the protocol's primary) on its shown range, with 95% CI whiskers."""
    from matplotlib.figure import Figure

    rows = chart_rows(report, metric)
    if all(mean is None for _, mean, _ in rows):
        return None
    low, high = metric.shown_range
    figure = Figure(figsize=(9, 1.0 + 0.34 * len(rows)), dpi=CHART_DPI, layout="constrained")
    axes = figure.add_subplot()
    positions = list(range(len(rows)))
    for y, (label, mean, ci) in zip(positions, rows):
        if mean is None:
            axes.text(low, y, "  no score", va="center", ha="left", color="#787878")
            continue
        colour = OVERALL_COLOUR if y == len(rows) - 1 else BAR_COLOUR
        axes.barh(y, mean - low, left=low, height=0.65, color=colour, gid=label)
        if ci is not None:
            axes.errorbar(mean, y, xerr=[[mean - ci[0]], [ci[1] - mean]], fmt="none", ecolor=WHISKER_COLOUR,
                          elinewidth=2, capsize=6, capthick=2)
    axes.set_yticks(positions, [label if len(label) <= 26 else label[:25] + "…" for label, _, _ in rows])
    axes.invert_yaxis()  # the first category on top, overall at the bottom
    axes.set_xlim(low, high)
    axes.set_xlabel(metric.name)
    axes.grid(axis="x", color="#e1e1e1")
    axes.set_axisbelow(True)
    axes.set_title(chart_title(metric), loc="left", fontsize=11)
    return figure


def figure_image(figure):
    """A figure rendered to an RGB image (Agg: the same pixels on every machine with the same matplotlib)."""
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(figure)
    with warnings.catch_warnings():  # a category in a script the bundled font lacks: drawn as boxes, said once
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def write_chart(path, report: dict[str, Any], metric: Metric) -> bool:
    """A PNG bar chart of `metric`'s mean per category and overall (see `chart_figure`). Returns False, writing
    nothing, when no category has a value."""
    from .store import STAMP_TEXT_KEY, save_png, stamp_line

    figure = chart_figure(report, metric)
    if figure is None:
        return False
    save_png(figure_image(figure), path,
             text={STAMP_TEXT_KEY: stamp_line(report["stamp"])} if report.get("stamp") else None)
    return True


def judge_usage(rows: list[dict[str, Any]], baselines: dict[str, list[dict[str, Any]]],
                per_rank: list[dict[str, Any]], price_per_mtok: Optional[dict[str, float]]) -> Optional[dict[str, Any]]:
    """A judge server's bill, or None for an in-process judge: this attempt's requests, retries, requests that
    failed for good and the prompt and completion tokens the server charged for them (over every rank; an answer
    given again from the judge's memo, e.g. a baseline's request equal to the editor's, is not charged again) and,
    with a price table (per million tokens), their cost. `samples_with_tokens`: the judged samples (the
    baselines' too, earlier attempts' included) whose row records the tokens of its answer (`judge_tokens`)."""
    usage = [t for t in per_rank if "judge_requests" in t]
    if not usage:  # an in-process judge
        return None
    every = [*rows, *(r for brows in baselines.values() for r in brows)]
    prompt = sum(t.get("judge_prompt_tokens") or 0 for t in usage)
    completion = sum(t.get("judge_completion_tokens") or 0 for t in usage)
    out = {"requests": sum(t["judge_requests"] for t in usage), "retries": sum(t["judge_retries"] for t in usage),
           "failed_requests": sum(t["judge_failures"] for t in usage),
           "samples_with_tokens": sum(1 for r in every if r.get("judge_tokens")),
           "prompt_tokens": prompt, "completion_tokens": completion,
           "price_per_mtok": price_per_mtok or None, "cost": None}
    if price_per_mtok:
        out["cost"] = round((prompt * price_per_mtok.get("prompt", 0.0)
                             + completion * price_per_mtok.get("completion", 0.0)) / 1e6, 6)
    return out


def judge_usage_lines(usage: Optional[dict[str, Any]]) -> list[str]:
    if not usage:
        return []
    cost = f"; cost {usage['cost']:.4f} at {usage['price_per_mtok']} per million tokens" \
        if usage.get("cost") is not None else ""
    return ["", f"Judge server: {usage['requests']} requests in this attempt ({usage['retries']} retries, "
                f"{usage['failed_requests']} failed for good); {usage['prompt_tokens']} prompt and "
                f"{usage['completion_tokens']} completion tokens charged{cost}."]
