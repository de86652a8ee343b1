"""The leaderboard across runs: comparable runs in one table (Markdown, CSV and HTML agreeing), the others named with
the field that differs; a sweep stands for its variants; the side-by-side page; the single-run gallery's care."""

import copy
import csv
import html
import io
import json
import re
import subprocess
import sys

import pytest
from launch import ROOT

from bench_lib.config import ConfigError
from bench_lib.leaderboard import leaderboard, load_entries, not_comparable

JUDGE = ["--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32", "--judge_min_digit_mass", "0",
         "--dataset", "data/demo/manifest.jsonl", "--limit", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three cheap runs of the same 3 samples and judge (no diffusion): the source unchanged (the reference, with
    the sanity baselines and its gallery), a blank image, and the source unchanged under another protocol; and a
    sweep of two variants of the first."""
    from bench_lib import cli

    tmp = tmp_path_factory.mktemp("board")
    out = {"identity": tmp / "identity", "blank": tmp / "blank", "other": tmp / "other", "sweep": tmp / "sweep"}
    assert cli.main(["--editor", "identity", *JUDGE, "--output_dir", str(out["identity"])]) == 0
    assert cli.main(["--editor", "blank", *JUDGE, "--baselines", "", "--gallery", "false",
                     "--output_dir", str(out["blank"])]) == 0
    assert cli.main(["--editor", "identity", *JUDGE, "--baselines", "", "--gallery", "false", "--protocol",
                     "viescore", "--output_dir", str(out["other"])]) == 0
    recipe = tmp / "sweep.yaml"
    recipe.write_text("editor: identity\nsweep:\n  - {name: a}\n  - {name: b}\n")
    assert cli.main(["--config", str(recipe), *JUDGE, "--baselines", "", "--gallery", "false",
                     "--output_dir", str(out["sweep"])]) == 0
    return out


def test_three_runs_one_with_another_protocol_show_two_and_name_the_third(runs, tmp_path):
    result = subprocess.run([sys.executable, "scripts/leaderboard.py", str(runs["identity"]), str(runs["other"]),
                             str(runs["blank"]), "--out", str(tmp_path / "board")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert sorted(r["run"] for r in board["rows"]) == ["blank", "identity"]
    means = [r["metrics"]["score"]["mean"] for r in board["rows"]]
    assert means == sorted(means, reverse=True) and [r["rank"] for r in board["rows"]] == [1, 2]  # best first
    assert [r["run"] for r in board["rows"] if r["reference"]] == ["identity"]  # the first given
    assert board["excluded"] == [{"run": "other", "folder": str(runs["other"]),
                                  "reason": "other: protocol viescore ≠ default"}]
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "- other: protocol viescore ≠ default" in md and "<li>other: protocol viescore ≠ default</li>" in page
    assert md in result.stdout

    # the three formats agree: the same runs, in the same order, with the same numbers
    table = [line for line in md.splitlines() if line.startswith("| ")]
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    html_rows = [[html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
                 for row in re.findall(r"<tr>(.*?)</tr>", page)]
    assert md_rows == html_rows and len(md_rows) == 3
    assert [r[1] for r in md_rows[1:]] == [r["run"] + (" (reference)" if r["reference"] else "")
                                           for r in board["rows"]]
    header = md_rows[0]
    assert "score (0-10, higher is better)" in header and "judge prompts" in header and "date" in header
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "board" / "leaderboard.csv").read_text())))
    assert [r["run"] for r in csv_rows] == [r["run"] for r in board["rows"]]
    assert [r["reference"] for r in csv_rows] == [str(r["reference"]).lower() for r in board["rows"]]
    for md_row, csv_row, row in zip(md_rows[1:], csv_rows, board["rows"]):
        stats = row["metrics"]["score"]
        assert float(csv_row["score_mean"]) == pytest.approx(stats["mean"])
        cell = md_row[header.index("score (0-10, higher is better)")]
        assert cell == f"{stats['mean']:.2f} [{stats['ci95'][0]:.2f}, {stats['ci95'][1]:.2f}]"
        assert float(csv_row["score_ci_low"]) == pytest.approx(stats["ci95"][0])
        assert md_row[header.index("judge")] == csv_row["judge"] == "tiny:qwen3-vl (logits)"
        assert md_row[header.index("judge prompts")] == csv_row["judge_prompts_sha256"][:12]
        assert csv_row["scored"] == md_row[header.index("scored")] == "3"


def test_a_sweep_stands_for_its_variants_and_the_reference_is_the_first_given(runs, tmp_path):
    board = leaderboard([runs["sweep"], runs["blank"], runs["other"]])
    assert board["reference"] == "sweep/a"
    assert sorted(r["run"] for r in board["rows"]) == ["blank", "sweep/a", "sweep/b"]
    assert [x["reason"] for x in board["excluded"]] == ["other: protocol viescore ≠ default"]
    board = leaderboard([runs["other"], runs["identity"]])  # another reference: the other one is left out
    assert [r["run"] for r in board["rows"]] == ["other"]
    assert [x["reason"] for x in board["excluded"]] == ["identity: protocol default ≠ viescore"]


def test_each_field_that_must_agree_is_named(runs):
    reference, other = load_entries([runs["identity"], runs["blank"]])
    assert not_comparable(reference, other) is None

    def changed(change):
        entry = copy.deepcopy(other)
        change(entry.run)
        return not_comparable(reference, entry)

    def other_judge(run):
        run["fingerprint"]["judge"]["qwen_vl"]["judge_model"] = "Qwen/Qwen3-VL-8B-Instruct"
        run["report"]["meta"]["judge_model"] = "Qwen/Qwen3-VL-8B-Instruct"

    assert changed(other_judge) == "blank: judge Qwen/Qwen3-VL-8B-Instruct (logits) ≠ tiny:qwen3-vl (logits)"
    reason = changed(lambda r: r["fingerprint"]["judge"].update(judge_max_pixels=1000))
    assert reason == "blank: judge settings (judge_max_pixels 1000 ≠ 262144)"
    reason = changed(lambda r: r["report"]["protocol"].update(prompts_sha256="f" * 64))
    assert reason.startswith("blank: judge prompts ffffffffffff ≠ ")
    reason = changed(lambda r: r["report"].setdefault("provenance", {}).update(judge_prompts={"sha256": "1" * 64}))
    assert reason.startswith("blank: judge prompts ")
    reason = changed(lambda r: r["fingerprint"]["data"].update(dataset_content="sha256:0"))
    assert reason.startswith("blank: dataset fingerprint (dataset_content 'sha256:0' ≠ ")
    reason = changed(lambda r: r.update(rows=r["rows"][:2]))
    assert reason == "blank: sample set 0 sample(s) the reference does not have, 1 of the reference's missing"


def test_a_folder_that_is_no_run_is_one_line_and_exit_2(runs, tmp_path):
    result = subprocess.run([sys.executable, "scripts/leaderboard.py", str(runs["identity"]), str(tmp_path),
                             "--out", str(tmp_path / "board")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and str(tmp_path) in result.stderr
    with pytest.raises(ConfigError, match="no runs"):
        leaderboard([])


def test_out_that_is_a_file_is_one_line_and_exit_2(runs, tmp_path):
    (tmp_path / "file").write_text("x")
    result = subprocess.run([sys.executable, "scripts/leaderboard.py", str(runs["identity"]), "--out",
                             str(tmp_path / "file")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "is a file" in result.stderr
    assert (tmp_path / "file").read_text() == "x"


def test_side_by_side_shows_each_runs_edit_with_its_scale_and_the_baselines(runs, tmp_path):
    from bench_lib.leaderboard import write_side_by_side

    board = leaderboard([runs["identity"], runs["blank"]])
    page = write_side_by_side(board, tmp_path).read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    assert len(rows) == 4  # the header and 3 samples
    assert re.findall(r"<th>(.*?)</th>", rows[0]) == ["sample", "source", "identity", "blank", "baseline: identity",
                                                      "baseline: blank"]
    for row in rows[1:]:
        assert row.count("<img ") == 3  # the source and both edits
        assert row.count("<small>(0-10)</small>") == 4 * 4  # 4 metrics, for 2 runs and 2 baselines
    reference = {r["id"]: r for r in load_entries([runs["identity"]])[0].run["rows"]}
    first = next(iter(reference.values()))
    assert f"score <b>{first['score']:.2f}</b> <small>(0-10)</small>" in rows[1]
    with pytest.raises(ConfigError, match="two or more"):
        write_side_by_side(leaderboard([runs["identity"]]), tmp_path)


def test_the_single_run_gallery_shows_scales_baselines_and_no_hashes_or_paths_in_its_header(runs):
    page = (runs["identity"] / "gallery.html").read_text()
    header = page[page.index("<header>"):page.index("</header>")]
    assert not re.search(r"[0-9a-f]{32}", header), header  # no hashes
    assert str(runs["identity"]) not in header and "/work" not in header and str(ROOT) not in header
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
                      .replace("\\u003c", "<"))
    items = data["items"]
    assert data["scale"] == {"score": [0, 10], "instruction": [0, 10], "consistency": [0, 10], "quality": [0, 10]}
    baseline_rows = [json.loads(line) for line in (runs["identity"] / "baselines" / "blank.jsonl").read_text()
                     .splitlines()]
    for item, blank in zip(items, baseline_rows):
        assert item["baselines"]["blank"] == pytest.approx(blank["score"])
    assert "function scaled(" in page  # every number printed with its scale beside it
    assert ".text { " in page and "grid-template-columns" in page  # a fixed image grid: text columns aligned


def test_runs_with_another_failure_policy_are_not_ranked_side_by_side(runs):
    reference, other = load_entries([runs["identity"], runs["blank"]])
    other = copy.deepcopy(other)
    other.label = "other"
    other.report["meta"]["config"]["failure_policy"] = "reference"
    assert not_comparable(reference, other) == "other: failure_policy reference ≠ strict"
    assert not_comparable(other, reference) == "identity: failure_policy strict ≠ reference"


def test_csv_text_cells_that_look_like_formulas_start_with_a_quote(runs, tmp_path):
    import shutil

    from bench_lib.leaderboard import render_csv

    names = ["=HYPERLINK(\"http:x\")", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx"]
    folders = [runs["identity"]]
    for i, name in enumerate(names):
        folders.append(tmp_path / str(i) / name)
        shutil.copytree(runs["blank"], folders[-1])
    board = leaderboard(folders)
    assert sorted(r["run"] for r in board["rows"]) == sorted(["identity", *names])
    rows = list(csv.DictReader(io.StringIO(render_csv(board), newline="")))
    by_folder = {r["folder"]: r for r in rows}
    for folder, name in zip(folders[1:], names):
        row = by_folder["'" + str(folder)] if str(folder).startswith(("=", "+", "-", "@")) else by_folder[str(folder)]
        assert row["run"] == "'" + name
    assert by_folder[str(runs["identity"])]["run"] == "identity"  # plain text as is
    for row in rows:  # numbers stay numbers (a negative one too)
        assert not row["score_mean"].startswith("'") and float(row["score_mean"]) >= 0
        assert row["rank"].isdigit()
    from bench_lib.leaderboard import csv_text

    assert csv_text(-1.5) == "'-1.5"  # the helper is for text only: numbers never go through it
    assert csv_text("a=b") == "a=b" and csv_text(None) == ""


def test_gallery_limit_below_0_and_a_gallery_of_one_run_write_nothing_and_exit_2(runs, tmp_path):
    for argv, words in (([str(runs["identity"]), str(runs["blank"]), "--gallery", "--gallery_limit", "-1"],
                         "gallery_limit"),
                        ([str(runs["identity"]), "--gallery"], "two or more")):
        out = tmp_path / words.replace(" ", "_")
        result = subprocess.run([sys.executable, "scripts/leaderboard.py", *argv, "--out", str(out)], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
        assert not out.exists()


def test_side_by_side_shows_no_sources_from_data_that_is_not_the_runs(runs, caplog):
    """The page reads the sources from where the reference run's dataset was: data changed there since (the same
    ids, other images) would put other samples' images beside the edits. Compared by content, as export does."""
    from bench_lib.leaderboard import _samples

    entry = load_entries([runs["identity"]])[0]
    assert len(_samples(entry)) == 3  # the run's own data: its sources are shown
    moved = copy.deepcopy(entry)
    moved.run["fingerprint"]["data"]["dataset_content"] = "sha256:" + "0" * 64  # as if the file changed since
    assert _samples(moved) == {}
    assert "is not the reference run's" in caplog.text
