import json
import math
import sys

import pytest
from launch import ROOT

from bench_lib.report import build_report, render_markdown, score_stats, timing_summary


def row(cat, status, score=None, human=None, parse=None):
    subscores = None if score is None else {"instruction": score, "consistency": score + 1, "quality": 10.0}
    judged = status in ("ok", "judge_failed")
    return {"id": f"{cat}-{status}-{score}-{human}", "category": cat, "status": status, "score": score,
            "subscores": subscores, "judge_parse": parse or ("ok" if judged else None), "human_score": human}


def test_failures_never_enter_the_mean():
    rows = [row("physics", "ok", 4.0), row("physics", "ok", 8.0), row("physics", "edit_failed"),
            row("social", "ok", 5.0), row("social", "invalid_input")]
    stats = score_stats(rows)
    assert stats["mean"] == pytest.approx(17 / 3) and stats["count"] == 3 and stats["failed"] == 2
    assert stats["failed_by_status"] == {"edit_failed": 1, "invalid_input": 1}
    physics = score_stats(rows[:3])
    assert physics["mean"] == 6.0 and physics["std"] == pytest.approx(math.sqrt(8.0))
    assert score_stats(rows[3:])["std"] is None  # one score: no spread
    assert score_stats([row("x", "judge_failed")])["mean"] is None


def test_report_and_markdown():
    rows = [row("physics", "ok", 4.0), row("social", "ok", 6.0), row("social", "edit_failed")]
    timings = timing_summary([
        {"load_editor": 3.0, "edit": 10.0, "edited": 2, "switch": 1.0, "judge": 2.0, "judged": 2},
        {"load_editor": 3.0, "edit": 12.0, "edited": 1, "switch": 1.5, "judge": 1.0, "judged": 0}])
    assert timings["edit_s"] == 12.0 and timings["edit_samples"] == 3 and timings["edit_samples_per_s"] == 0.25
    assert timings["judge_s"] == 2.0 and timings["judge_samples_per_s"] == 1.0 and timings["switch_s"] == 1.5
    meta = {"dataset": "d", "num_samples": 3, "editor_model": "e", "judge_model": "j", "world_size": 2, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "sqrt(min(I, C) * Q)"}
    report = build_report(rows, timings=timings, meta=meta)
    assert set(report["categories"]) == {"physics", "social"}
    assert report["overall"]["count"] == 2 and report["overall"]["failed"] == 1
    md = render_markdown(report)
    assert "| physics | 4.00 | – | – | 4.00 | 5.00 | 10.00 | 1 | 0 | 0 | 0% |" in md
    assert "| social | 6.00 | – | – | 6.00 | 7.00 | 10.00 | 1 | 1 | 0 | 0% |" in md
    assert report["human_agreement"] is None and "Spearman" not in md
    assert "| edit | 12.0 | 3 | 0.250 |" in md and "| switch | 1.5 | – | – |" in md


def test_flagged_rows_are_counted_but_still_scored():
    rows = [row("physics", "ok", 4.0), row("physics", "ok", 6.0)]
    rows[0]["flags"] = ["constant_image"]
    stats = score_stats(rows)
    assert stats["flagged"] == 1 and stats["flags"] == {"constant_image": 1} and stats["count"] == 2


def test_subscore_means_and_parse_failures_per_category():
    rows = [row("physics", "ok", 4.0), row("physics", "ok", 8.0, parse="reasked"),
            row("physics", "judge_failed", parse="failed"), row("physics", "edit_failed"),
            row("social", "judge_failed", parse="failed")]
    physics = score_stats(rows[:4])
    assert physics["subscores"] == {"instruction": 6.0, "consistency": 7.0, "quality": 10.0}
    assert physics["judged"] == 3 and physics["reasked"] == 1 and physics["parse_failed"] == 1
    assert physics["parse_failure_rate"] == pytest.approx(1 / 3)
    social = score_stats(rows[4:])
    assert social["parse_failure_rate"] == 1.0 and social["subscores"]["instruction"] is None
    assert score_stats(rows[3:4])["parse_failure_rate"] is None  # nothing judged: no rate, not 0%


def test_human_agreement_per_category_and_overall():
    # physics: judge and human agree in order; social: reversed; failures and rows without a human score skipped
    rows = [row("physics", "ok", s, human=h) for s, h in [(1.0, 2.0), (2.0, 3.0), (3.0, 5.0)]]
    rows += [row("social", "ok", s, human=h) for s, h in [(1.0, 9.0), (4.0, 8.0), (6.0, 1.0)]]
    rows += [row("social", "judge_failed", human=0.0), row("social", "ok", 5.0)]
    meta = {"dataset": "d", "num_samples": len(rows), "editor_model": "e", "judge_model": "j", "world_size": 1,
            "seed": 0, "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    report = build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1, "switch": 0,
                                                          "judge": 1, "judged": 1}]), meta=meta)
    agreement = report["human_agreement"]
    assert agreement["categories"]["physics"] == {"n": 3, "spearman": pytest.approx(1.0),
                                                  "kendall_tau_b": pytest.approx(1.0)}
    assert agreement["categories"]["social"]["n"] == 3
    assert agreement["categories"]["social"]["spearman"] == pytest.approx(-1.0)
    # overall, 6 pairs: judge 1,2,3,1,4,6 vs human 2,3,5,9,8,1: 6 concordant, 8 discordant, 1 tied in judge only
    assert agreement["overall"]["n"] == 6
    assert agreement["overall"]["kendall_tau_b"] == pytest.approx(-2 / (15 * 14) ** 0.5)
    md = render_markdown(report)
    assert "| physics | 3 | 1.000 | 1.000 |" in md and "| social | 3 | -1.000 | -1.000 |" in md


def test_confidence_intervals_and_micro_macro_means():
    rows = [row("physics", "ok", s) for s in (2.0, 4.0, 6.0)] + [row("social", "ok", 8.0), row("social", "ok", 8.0)]
    timings = timing_summary([{"load_editor": 1, "edit": 10, "edited": 3, "barrier_wait": 4.0, "switch": 1,
                               "judge": 2, "judged": 4},
                              {"load_editor": 1, "edit": 10, "edited": 2, "barrier_wait": 0.0, "switch": 1,
                               "judge": 2, "judged": 0}])
    assert timings["per_rank"][0]["edit_s_per_image"] == 2.0  # (10 - 4 s waiting) / 3 images
    assert timings["per_rank"][0]["judge_s_per_sample"] == 0.5 and timings["per_rank"][1]["judge_s_per_sample"] is None
    meta = {"dataset": "d", "num_samples": 5, "editor_model": "e", "judge_model": "j", "world_size": 2, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    report = build_report(rows, timings=timings, meta=meta)
    physics, social, overall = report["categories"]["physics"], report["categories"]["social"], report["overall"]
    assert physics["ci95"][0] < 4.0 < physics["ci95"][1] and social["ci95"] == [8.0, 8.0]
    assert overall["mean"] == pytest.approx(28 / 5) and overall["macro_mean"] == pytest.approx(6.0)
    assert overall["macro_ci95"][0] < 6.0 < overall["macro_ci95"][1]
    md = render_markdown(report, chart="report_chart.png")
    assert ("| social | 8.00 | [8.00, 8.00] |" in md
            and "macro mean (every category with a score weighs the same) is 6.00" in md)
    assert "![Mean score per category with 95% confidence intervals](report_chart.png)" in md
    assert "| 0 | 3 | 2.000 | 4.0 | 1.0 | 4 | 0.500 |" in md


def protocol_of(name: str):
    from bench_lib.config import JudgeConfig
    from bench_lib.judges.rubrics import Rubrics
    from bench_lib.protocols import make_protocol

    cfg = JudgeConfig(protocol=name)
    return make_protocol(cfg, Rubrics(cfg.prompts_dir))


def metric_rows(protocol, values: dict[str, list[float]]) -> list[dict]:
    """Scored rows whose every metric has the given per-sample value (one row per value, per category)."""
    rows = []
    for category, scores in values.items():
        for i, value in enumerate(scores):
            metrics = {m.name: value for m in protocol.metrics}
            rows.append({"id": f"{category}{i}", "category": category, "status": "ok", "score": value, "flags": [],
                         "judge_parse": "ok", "metrics": metrics, "subscores": None})
    rows.append({"id": "failed", "category": "social", "status": "edit_failed", "score": None, "flags": [],
                 "judge_parse": None, "metrics": None, "subscores": None})
    return rows


def test_chart_bars_are_drawn_to_scale(tmp_path):
    """Each bar runs from the scale's low end to its mean (the overall bar in its own colour); a category with no
    score has no bar; the written PNG is the figure's pixels with the output stamp."""
    from PIL import Image

    from bench_lib.report import BAR_COLOUR, OVERALL_COLOUR, chart_figure, figure_image, write_chart
    from bench_lib.store import STAMP_TEXT_KEY

    protocol = protocol_of("default")
    report = build_report(metric_rows(protocol, {"causal": [2.0, 2.0], "physics": [7.5, 7.5]}),
                          timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1, "switch": 0, "judge": 1,
                                                   "judged": 1}]), meta={}, protocol=protocol)
    report["stamp"] = {"attempt": 1, "results_sha256": "0" * 64}
    metric = protocol.primary
    assert report["overall"]["metrics"]["score"]["mean"] == 4.75
    figure = chart_figure(report, metric)
    image = figure_image(figure)  # drawn: the layout is final, so data coordinates map to these pixels
    axes = figure.axes[0]
    height = image.size[1]

    def pixel(x: float, y: float) -> tuple[int, int]:
        px, py = axes.transData.transform((x, y))
        return round(px), height - round(py)

    def rgb(hex_colour: str) -> tuple[int, ...]:
        return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))

    y_of = {label.get_text(): y for label, y in zip(axes.get_yticklabels(), axes.get_yticks())}
    assert list(y_of) == ["causal", "physics", "social", "overall"]  # social: every sample failed
    for label, mean, colour in [("causal", 2.0, BAR_COLOUR), ("physics", 7.5, BAR_COLOUR),
                                ("overall", 4.75, OVERALL_COLOUR)]:
        y = y_of[label] - 0.2  # inside the bar, off the whisker
        assert image.getpixel(pixel(0.3, y)) == rgb(colour) and image.getpixel(pixel(mean - 0.1, y)) == rgb(colour)
        assert image.getpixel(pixel(mean + 0.15, y)) != rgb(colour)  # the bar ends at its mean
    assert write_chart(tmp_path / "c.png", report, metric)
    with Image.open(tmp_path / "c.png") as written:
        assert written.convert("RGB").tobytes() == image.tobytes()
        assert written.info[STAMP_TEXT_KEY].startswith("Outputs of attempt 1")
    assert image.getpixel(pixel(0.3, y_of["social"] - 0.2)) not in (rgb(BAR_COLOUR), rgb(OVERALL_COLOUR))
    assert sorted(patch.get_gid() for patch in axes.patches) == ["causal", "overall", "physics"]
    empty = build_report(metric_rows(protocol, {}), timings=report["timings"], meta={}, protocol=protocol)
    assert not write_chart(tmp_path / "none.png", empty, metric) and not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("name", ["default", "kris", "re_edit", "risebench", "viescore"])
def test_the_chart_draws_the_primary_metric_on_its_shown_range(name):
    """Every protocol's chart: its primary metric's mean per category, on the range the report shows it on (KRIS
    0-100, RE-Edit's yes-rate %, RISEBench 1-5), named in the axis and the title."""
    from bench_lib.report import chart_figure

    protocol = protocol_of(name)
    metric = protocol.primary
    assert metric.name == {"default": "score", "kris": "score", "re_edit": "yes_rate", "risebench": "score",
                           "viescore": "overall"}[name]
    low, high = metric.low, metric.high
    values = {"a": [low, low + (high - low) / 2], "b": [high, high]}
    report = build_report(metric_rows(protocol, values), timings={}, meta={}, protocol=protocol)
    axes = chart_figure(report, metric).axes[0]
    shown = {"default": (0, 10), "kris": (0, 100), "re_edit": (0, 100), "risebench": (1, 5), "viescore": (0, 10)}
    assert axes.get_xlim() == shown[name] and axes.get_xlabel() == metric.name
    assert axes.get_title(loc="left") == (f"Mean {metric.name} per category, {shown[name][0]}-{shown[name][1]} "
                                          "(whiskers: 95% bootstrap CI)")
    bars = {patch.get_gid(): patch for patch in axes.patches}
    assert bars["b"].get_x() + bars["b"].get_width() == pytest.approx(shown[name][1])  # b is at the top of the scale
    assert bars["b"].get_x() == shown[name][0]


def test_peak_memory_per_rank_and_stage():
    """Each rank's peak device memory per stage, in report.json (bytes) and report.md (GiB, allocated / reserved);
    not measured (CPU) is null and "–", never 0."""
    gib = 2**30
    timings = timing_summary([
        {"load_editor": 3.0, "edit": 10.0, "edited": 2, "switch": 1.0, "judge": 2.0, "judged": 2,
         "edit_max_memory_allocated": 60 * gib, "edit_max_memory_reserved": 70 * gib,
         "judge_max_memory_allocated": 20 * gib + gib // 2, "judge_max_memory_reserved": 24 * gib},
        {"load_editor": 3.0, "edit": 12.0, "edited": 1, "switch": 1.5, "judge": 1.0, "judged": 0,
         "edit_max_memory_allocated": None, "edit_max_memory_reserved": None,
         "judge_max_memory_allocated": None, "judge_max_memory_reserved": None}])
    assert timings["per_rank"][0]["edit_max_memory_reserved"] == 70 * gib
    assert timings["per_rank"][1]["judge_max_memory_allocated"] is None
    meta = {"dataset": "d", "num_samples": 1, "editor_model": "e", "judge_model": "j", "world_size": 2, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    md = render_markdown(build_report([row("physics", "ok", 4.0)], timings=timings, meta=meta))
    assert "| 0 | 2 | 5.000 | – | 1.0 | 2 | 1.000 | 60.00 / 70.00 | 20.50 / 24.00 |" in md
    assert "| 1 | 1 | 12.000 | – | 1.5 | 0 | – | – | – |" in md


def test_a_row_without_a_category_neither_makes_a_category_nor_blanks_the_macro_mean():
    rows = [{"id": "a", "category": "physics", "status": "ok", "score": 4.0, "subscores": None},
            {"id": "b", "category": "physics", "status": "ok", "score": 6.0, "subscores": None},
            {"id": "c", "category": "social", "status": "ok", "score": 8.0, "subscores": None},
            {"id": "d", "category": "causal", "status": "edit_failed", "score": None, "subscores": None},
            {"id": "e", "category": "", "status": "invalid_input", "score": None, "subscores": None}]
    for row in rows:
        row["subscores"] = ({k: row["score"] for k in ("instruction", "consistency", "quality")}
                            if row["score"] else None)
    meta = {"dataset": "d", "num_samples": 5, "editor_model": "e", "judge_model": "j", "world_size": 1, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    report = build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1, "switch": 0,
                                                          "judge": 1, "judged": 1}]), meta=meta)
    assert set(report["categories"]) == {"physics", "social", "causal"}
    overall = report["overall"]
    assert overall["failed"] == 2 and overall["count"] == 3  # the row still counts, overall
    assert overall["macro_mean"] == pytest.approx(6.5)  # (5 + 8) / 2: causal has no score to weigh
    assert overall["macro_categories"] == ["physics", "social"]
    assert "|  |" not in render_markdown(report)


def test_markdown_tables_escape_text_from_the_data(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    nasty = "a|b\nc <b>bold</b> `code`"
    rows = [{"id": f"s{i}", "category": nasty if i % 2 else "plain", "status": "ok", "score": float(i),
             "subscores": {"instruction": 1.0, "consistency": 1.0, "quality": 1.0}} for i in range(4)]
    meta = {"dataset": "data`set", "num_samples": 4, "editor_model": "e|x", "judge_model": "j", "world_size": 1,
            "seed": 0, "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    md = render_markdown(build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1,
                                                                      "switch": 0, "judge": 1, "judged": 1}]),
                                      meta=meta))
    table = [line for line in md.splitlines() if line.startswith("| ") and "| score |" not in line]
    first = table[:3]  # the two categories and overall
    assert [line.count(" | ") for line in first] == [10, 10, 10]  # every row keeps its 11 cells
    assert "<b>" not in md and "&lt;b&gt;" in md and "a\\|b c" in md and "\\`code\\`" in md

    def run(folder):
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"fingerprint": {}, "attempts": 1}))
        return {"folder": folder, "fingerprint": {}, "rows": rows, "meta": {"score_formula": "viescore"}}

    text = compare_runs.render(compare_runs.compare(run(tmp_path / "a"), run(tmp_path / "b")))
    assert "<b>" not in text and "a\\|b c &lt;b&gt;" in text
    assert all(line.count(" | ") == 6 for line in text.splitlines() if line.startswith("| ") and "---" not in line)
