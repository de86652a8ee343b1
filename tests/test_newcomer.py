"""A newcomer's first ten minutes: the command line answers before any model library is imported, every way to
name a dataset or model wrongly is one line and exit 2, the common data forms work, the package installs and runs
from anywhere, and the results have one declared schema and export as a dataset with images."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from bench_lib.models import hub_problem
from bench_lib.options import parse_config

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
HEAVY = ("torch", "diffusers", "transformers")

# Runs the command line in a fresh interpreter and reports which model libraries it imported.
PROBE = """
import sys
from bench_lib.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("IMPORTED", sorted(m for m in ("torch", "diffusers", "transformers", "datasets") if m in sys.modules))
sys.exit(code)
"""


def probe(*args, cwd=ROOT, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    environ.update(env, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=environ, capture_output=True,
                            text=True, timeout=120)
    imported = json.loads(result.stdout.rsplit("IMPORTED ", 1)[1].replace("'", '"'))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result, imported, errors


def assert_one_line(result, errors, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_help_answers_without_any_model_library_and_shows_what_a_plain_run_uses():
    result, imported, _ = probe("--help")
    assert result.returncode == 0 and imported == []
    help_text = result.stdout
    # kebab-case aliases, choices, metavars, and the recipe's values (not the dataclass defaults)
    assert "--output_dir PATH, --output-dir PATH" in help_text
    assert "{logits,generate}" in help_text and "--judge_batch_size N" in help_text
    assert str(ROOT / "outputs" / "smoke") in help_text and "outputs/run" not in help_text
    assert "[editor]:" in help_text and "[judge:qwen_vl]:" in help_text


@pytest.mark.parametrize("args, fragments", [
    (["--limit", "abc"], ["limit", "abc"]),
    (["--ouput_dir", "x"], ["--ouput_dir", "did you mean", "--output_dir"]),
    (["--judge_mode", "sample"], ["judge_mode", "logits", "generate"]),
])
def test_config_errors_are_one_line_before_any_import(args, fragments):
    result, imported, errors = probe(*args)
    assert_one_line(result, errors, *fragments)
    assert imported == []


def test_kebab_case_flags_are_the_same_keys(tmp_path):
    cfg = parse_config(["--output-dir", str(tmp_path), "--judge-batch-size", "3", "--edit_batch_size", "2"])
    assert cfg.run.output_dir == str(tmp_path) and cfg.judge.judge_batch_size == 3 and cfg.editor.edit_batch_size == 2


def test_dataset_names_that_cannot_work_are_one_line_before_torch(tmp_path):
    # A missing local path is never sent to the hub, however it is written.
    for name in ("data/nope", str(tmp_path / "nope"), "./nope", "nope.parquet"):
        result, imported, errors = probe("--dataset", name, "--output_dir", str(tmp_path / "out"))
        assert_one_line(result, errors, repr(name), "no such file or folder")
        assert not set(imported) & set(HEAVY)
    # A hub id with offline mode on and nothing cached: which variable, which download.
    empty_home = str(tmp_path / "hf")
    result, imported, errors = probe("--dataset", "someorg/somebench", "--output_dir", str(tmp_path / "out"),
                                     HF_HUB_OFFLINE="1", HF_HOME=empty_home)
    assert_one_line(result, errors, "offline mode is on", "HF_HUB_OFFLINE",
                    "hf download --repo-type dataset someorg/somebench")
    assert not set(imported) & set(HEAVY)
    # An unreachable hub: one attempt (no retries), then the message.
    result, imported, errors = probe("--dataset", "someorg/somebench", "--output_dir", str(tmp_path / "out"),
                                     HF_HOME=empty_home, HF_ENDPOINT="http://127.0.0.1:9")
    assert_one_line(result, errors, "cannot be reached", "someorg/somebench")
    assert not set(imported) & set(HEAVY)


def test_a_model_not_downloaded_is_not_called_not_a_pipeline(tmp_path):
    out = str(tmp_path / "out")
    result, imported, errors = probe("--config", "configs/qwen_image_edit.yaml", "--dataset", str(DEMO),
                                     "--output_dir", out, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert_one_line(result, errors, "Qwen/Qwen-Image-Edit", "not in the local cache",
                    "hf download Qwen/Qwen-Image-Edit")
    assert "not a diffusers pipeline" not in errors[0] and not set(imported) & set(HEAVY)
    folder = tmp_path / "not-a-pipeline"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result, imported, errors = probe("--config", "configs/smoke.yaml", "--editor_model", str(folder),
                                     "--output_dir", out)
    assert_one_line(result, errors, "is not a diffusers pipeline", "model_index.json")
    result, imported, errors = probe("--config", "configs/smoke.yaml", "--judge_model", str(tmp_path / "no-judge"),
                                     "--output_dir", out)
    assert_one_line(result, errors, "judge_model", "no such folder")
    assert not set(imported) & set(HEAVY)


@pytest.mark.parametrize("error, fragment", [
    ("GatedRepoError", "gated"), ("RepositoryNotFoundError", "no such model on the hub (or it is private"),
    ("RevisionNotFoundError", "has no revision"),
])
def test_gated_private_and_missing_repositories_are_told_apart(monkeypatch, tmp_path, error, fragment):
    from huggingface_hub import HfApi, errors

    calls = []

    def repo_info(self, repo_id, **kwargs):
        calls.append(repo_id)
        exception = getattr(errors, error)
        raised = exception.__new__(exception)  # the hub's answer without an HTTP response object
        Exception.__init__(raised, "refused")
        raise raised

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    problem = hub_problem("someorg/model", repo_type="model", revision="v9", key="editor_model")
    assert fragment in problem and "someorg/model" in problem
    assert calls == ["someorg/model"]  # one request, no retries


def copy_demo(folder: Path, n: int) -> list[dict]:
    """The first `n` demo samples with their source images in `folder/images` (paths relative to `folder`)."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()][:n]
    (folder / "images").mkdir(parents=True)
    for row in rows:
        name = Path(row["source_image"]).name
        shutil.copy(DEMO / row["source_image"], folder / "images" / name)
        row["source_image"] = f"images/{name}"
        row.pop("reference_image", None)
    return rows


def identity_run(dataset, out, *extra):
    """A full run with the identity editor (no diffusion: only the data path and the judge are exercised)."""
    from bench_lib.cli import main

    return main(["--dataset", str(dataset), "--output_dir", str(out), "--editor", "identity", "--baselines", "",
                 *extra])


def test_parquet_of_image_paths_csv_and_single_files_work(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    monkeypatch.chdir(folder)  # as a user writes it: image paths relative to where the parquet goes
    table = datasets.Dataset.from_list(rows)
    table.cast_column("source_image", datasets.Image()).to_parquet("images.parquet")
    table.to_csv("table.csv")
    monkeypatch.chdir(tmp_path)
    import pyarrow.parquet as pq

    stored = pq.read_table(folder / "images.parquet").column("source_image").to_pylist()
    assert stored[0] == {"bytes": None, "path": "images/physics_01.png"}  # the form that failed every row before
    for name in ("images.parquet", "table.csv"):
        assert identity_run(folder / name, tmp_path / name) == 0
        results = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in results] == ["ok"] * 3, results


def test_all_invalid_samples_exit_2_before_any_model_loads(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    rows[2]["source_image"] = "../outside.png"
    (tmp_path / "outside.png").write_bytes((folder / "images" / "physics_01.png").read_bytes())
    monkeypatch.chdir(folder)
    datasets.Dataset.from_list(rows).cast_column("source_image", datasets.Image()).to_parquet("images.parquet")
    shutil.rmtree(folder / "images")  # the parquet's image files are gone
    result, imported, errors = probe("--dataset", str(folder / "images.parquet"), "--output_dir",
                                     str(tmp_path / "out"), cwd=tmp_path)
    assert_one_line(result, errors, "none of the 3 samples is usable", "physics_01: source_image file not found",
                    "outside the dataset's folder")
    assert not set(imported) & set(HEAVY)  # found before torch, so before any model


def test_installable_with_an_entry_point_and_runnable_from_anywhere(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"edit-bench": "bench_lib.cli:main"}
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    runtime = {r for r in requirements if r and not r.startswith(("pytest", "ruff"))}
    assert set(project["dependencies"]) == runtime
    # `python -m bench_lib` with the offline default recipe (its judge; the identity editor, as diffusion is not
    # what is tested here), from a folder that is not the checkout.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bench_lib", "--limit", "2", "--baselines", "", "--editor",
                             "identity", "--output_dir", "here"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "here" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]


def test_progress_counts_samples_and_hides_the_libraries_bars(tmp_path, capfd):
    assert identity_run(DEMO / "manifest.jsonl", tmp_path / "out", "--limit", "4", "--baselines", "identity") == 0
    err = capfd.readouterr().err.replace("\r", "\n")
    assert "edit: 100%" in err and "4/4" in err  # samples, not batches
    assert "judge (editor, identity): 100%" in err and "8/8" in err  # the editor's 4 and the baseline's 4
    assert "Loading" not in err and "Generating" not in err  # no loader bars without --verbose


def test_results_have_one_declared_schema(tmp_path):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    for i, row in enumerate(rows):
        row["id"] = str(i)  # ids that look like numbers stay strings
    rows[1]["source_image"] = "images/missing.png"  # one invalid_input row: its scores are null, typed
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert identity_run(folder / "m.jsonl", tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    features = datasets.Features.from_dict(report["results_features"])
    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "results.jsonl"), features=features,
                                   split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features == features and loaded["id"] == ["0", "1", "2"]
    assert features["score"] == datasets.Value("float64") and features["seed"] == datasets.Value("int64")
    assert features["human_score"] == datasets.Value("float64")  # null on every row, still a float column
    frame = loaded.to_pandas()
    assert frame["id"].tolist() == ["0", "1", "2"] and frame["score"].dtype == "float64"
    assert frame["status"].tolist() == ["ok", "invalid_input", "ok"]
    # pandas on the file itself, told not to guess types, gives the same strings and floats
    import pandas as pd

    raw = pd.read_json(tmp_path / "out" / "results.jsonl", lines=True, dtype=False)
    assert raw["id"].tolist() == ["0", "1", "2"]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert all(set(r) == set(features) for r in results)  # every key on every row
    assert all(isinstance(v, float) for r in results if r["metrics"] for v in r["metrics"].values())


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
    assert "## Provenance" in card and "harness" in card and results[0]["id"] not in ("",)
    assert "identity" in exported.info.description
    exported.to_parquet(str(tmp_path / "export.parquet"))  # the form push_to_hub uploads
    # a second export into the same folder is refused, one line
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "export")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "not empty" in result.stderr
