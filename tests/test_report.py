import math

import pytest

from bench_lib.report import build_report, render_markdown, score_stats, timing_summary


def row(cat, status, score=None):
    return {"id": f"{cat}-{status}-{score}", "category": cat, "status": status, "score": score}


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
    timings = timing_summary([{"load_editor": 3.0, "edit": 10.0, "edited": 2, "switch": 1.0, "judge": 2.0, "judged": 2},
                              {"load_editor": 3.0, "edit": 12.0, "edited": 1, "switch": 1.5, "judge": 1.0, "judged": 0}])
    assert timings["edit_s"] == 12.0 and timings["edit_samples"] == 3 and timings["edit_samples_per_s"] == 0.25
    assert timings["judge_s"] == 2.0 and timings["judge_samples_per_s"] == 1.0 and timings["switch_s"] == 1.5
    meta = {"dataset": "d", "num_samples": 3, "editor_model": "e", "judge_model": "j", "world_size": 2, "seed": 0}
    report = build_report(rows, timings=timings, meta=meta)
    assert set(report["categories"]) == {"physics", "social"}
    assert report["overall"]["count"] == 2 and report["overall"]["failed"] == 1
    md = render_markdown(report)
    assert "| physics | 4.00 | – | 1 | 0 | 0 |" in md
    assert "| social | 6.00 | – | 1 | 1 | 0 |" in md
    assert "| edit | 12.0 | 3 | 0.250 |" in md and "| switch | 1.5 | – | – |" in md


def test_flagged_rows_are_counted_but_still_scored():
    rows = [row("physics", "ok", 4.0), row("physics", "ok", 6.0)]
    rows[0]["flags"] = ["constant_image"]
    stats = score_stats(rows)
    assert stats["flagged"] == 1 and stats["flags"] == {"constant_image": 1} and stats["count"] == 2
