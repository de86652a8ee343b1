"""scripts/export_results.py (bench_lib.export): a finished run as a dataset with its images, checked against the
run's own data, with every row exported whatever became of its images."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import DEMO, identity_run
from launch import ROOT
from test_data import finishes
from test_multiprocess import make_manifest

import bench_lib.cli as cli
from bench_lib.store import stamp_line

SCRIPT = ROOT / "scripts" / "export_results.py"
sys.path.insert(0, str(ROOT / "scripts"))
import export_results  # noqa: E402


@pytest.fixture(scope="module")
def run_with_bad_sources(tmp_path_factory):
    """A finished run of 4 demo samples: sample 1's source file is missing and sample 2's is truncated base64
    (both invalid_input); samples 0 and 3 are scored."""
    folder = tmp_path_factory.mktemp("export")
    manifest = make_manifest(folder, 4)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["source_image"] = "images/gone.png"
    encoded = base64.b64encode((folder / rows[2]["source_image"]).read_bytes()).decode("ascii")
    rows[2]["source_image"] = encoded[:-3]  # no longer a multiple of 4 characters: b64decode fails
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "run"
    assert cli.main(["--dataset", str(manifest), "--output_dir", str(out), "--editor", "identity", "--baselines", "",
                     "--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32", "--judge_min_digit_mass", "0",
                     "--gallery", "false"]) == 0
    return manifest, out


def export(run, target, *extra):
    """The script's main in this process (the first test runs it as a script), with what it printed."""
    import contextlib
    import io
    from types import SimpleNamespace

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export_results.main([str(run), str(target), *extra])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line(result, *fragments):
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_a_run_with_unreadable_sources_exports_every_row(run_with_bad_sources, tmp_path):
    import datasets

    manifest, run = run_with_bad_sources
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["ok", "invalid_input", "invalid_input", "ok"]
    result = export(run, tmp_path / "export")
    assert result.returncode == 0, result.stderr
    exported = datasets.load_from_disk(str(tmp_path / "export"))
    assert exported["id"] == [r["id"] for r in results] and exported["status"] == [r["status"] for r in results]
    assert exported[1]["source_image"] is None and exported[2]["source_image"] is None
    assert exported[0]["source_image"].size == exported[0]["edited_image"].size  # the identity editor's edit
    assert exported[3]["source_image"] is not None and exported[1]["error"] == results[1]["error"]


def test_a_source_that_is_gone_or_a_fifo_since_the_run_is_an_empty_image_not_a_crash_or_a_hang(
        run_with_bad_sources, tmp_path):
    import datasets

    from bench_lib.export import export_run

    manifest, run = run_with_bad_sources
    copy = tmp_path / "data"
    shutil.copytree(manifest.parent, copy, ignore=shutil.ignore_patterns("run"))
    rows = [json.loads(line) for line in (copy / "manifest.jsonl").read_text().splitlines()]
    (copy / rows[0]["source_image"]).unlink()  # images are not part of a manifest's identity
    (copy / rows[3]["source_image"]).unlink()
    os.mkfifo(copy / rows[3]["source_image"])
    outcome = finishes(lambda: export_run(run, tmp_path / "export", dataset=str(copy / "manifest.jsonl")),
                       unblock=[copy / rows[3]["source_image"]], timeout=120)
    assert "error" not in outcome, outcome
    exported = datasets.load_from_disk(str(tmp_path / "export"))
    assert exported["source_image"] == [None] * 4 and exported["status"] == ["ok", "invalid_input", "invalid_input",
                                                                             "ok"]
    assert exported[0]["edited_image"] is not None


def test_export_with_another_dataset_of_the_same_ids_is_refused(run_with_bad_sources, tmp_path):
    manifest, run = run_with_bad_sources
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[0]["instruction"] = "something else entirely"  # same ids, other data
    other = manifest.parent / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = export(run, tmp_path / "export", "--dataset", str(other))
    assert_one_line(result, "is not the run's data", str(other))
    assert not (tmp_path / "export").exists()


def test_export_with_image_files_replaced_since_the_run_is_refused(run_with_bad_sources, tmp_path):
    """A manifest names its images by path: the same manifest beside other image files has the run's identity, but
    the export would pair the run's scores with images the run never judged."""
    from bench_lib.config import ConfigError
    from bench_lib.export import export_run

    manifest, run = run_with_bad_sources
    copy = tmp_path / "data"
    shutil.copytree(manifest.parent, copy, ignore=shutil.ignore_patterns("run"))
    rows = [json.loads(line) for line in (copy / "manifest.jsonl").read_text().splitlines()]
    shutil.copy(copy / rows[0]["source_image"], copy / rows[3]["source_image"])  # sample 3 shows sample 0's image
    expected = rf"image files of 1 sample.*{re.escape(repr(rows[3]['id']))}.*replaced since"
    with pytest.raises(ConfigError, match=expected):
        export_run(run, tmp_path / "export", dataset=str(copy / "manifest.jsonl"))
    assert not (tmp_path / "export").exists()


def test_export_to_a_file_is_one_line(run_with_bad_sources, tmp_path):
    _, run = run_with_bad_sources
    (tmp_path / "file").write_text("x")
    assert_one_line(export(run, tmp_path / "file"), str(tmp_path / "file"), "is a file")
    assert (tmp_path / "file").read_text() == "x"


def test_the_card_names_the_dataset_not_a_local_path_and_rounds_the_means(run_with_bad_sources, tmp_path):
    manifest, run = run_with_bad_sources
    assert export_results.main([str(run), str(tmp_path / "export")]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    report = json.loads((run / "report.json").read_text())
    assert str(manifest.parent) not in card and str(ROOT) not in card  # no local absolute path
    assert "manifest.jsonl" in card
    mean = report["overall"]["mean"]
    assert repr(mean) not in card and f"score {mean:.2f} over 2 scored samples" in card
    assert f'"mean": {round(mean, 4)},' in card
    assert stamp_line(report["stamp"]) + "\n" in card  # one full stop


@pytest.mark.parametrize("value, shown", [
    ("/home/me/data/manifest.jsonl", "manifest.jsonl"), ("/home/me/KRIS_Bench/", "KRIS_Bench"),
    ("precomputed:/home/me/edits", "precomputed:edits"), ("~/models/lora", "lora"),
    ("cannot read /tmp/x/a.png: gone", "cannot read a.png: gone"),
    ("https://huggingface.co/org/name", "https://huggingface.co/org/name"), ("org/name", "org/name"),
    ("data/demo/manifest.jsonl", "data/demo/manifest.jsonl"), ("tiny:qwen3-vl", "tiny:qwen3-vl"),
    (1.23456789, 1.23456789),  # config values are never rounded
])
def test_the_card_shows_a_local_path_by_its_last_part(value, shown):
    from bench_lib.export import _public

    assert _public({"k": [value]}) == {"k": [shown]}


def test_export_is_a_dataset_with_images_and_the_same_scores(tmp_path):
    import datasets
    from PIL import Image

    assert identity_run(DEMO / "manifest.jsonl", tmp_path / "run", "--limit", "3") == 0
    script = ROOT / "scripts" / "export_results.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "export")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    exported = datasets.load_from_disk(str(tmp_path / "export"))
    for column in ("source_image", "edited_image", "reference_image"):
        assert isinstance(exported.features[column], datasets.Image)
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert exported["id"] == [r["id"] for r in results] and exported["score"] == [r["score"] for r in results]
    assert exported["metrics"] == [r["metrics"] for r in results]
    first = exported[0]
    edited = Image.open(tmp_path / "run" / results[0]["edited_image"])
    assert first["edited_image"].size == edited.size and first["edited_image"].tobytes() == edited.convert(
        first["edited_image"].mode).tobytes()
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Provenance" in card and "harness" in card
    assert "identity" in exported.info.description
    exported.to_parquet(str(tmp_path / "export.parquet"))  # the form push_to_hub uploads
    # a second export into the same folder is refused, one line
    result = export(tmp_path / "run", tmp_path / "export")
    assert result.returncode == 2 and result.stderr.startswith("error:") and "not empty" in result.stderr
