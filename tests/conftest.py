import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (`-n 2`, the README's test command) each worker computes on one thread: two workers already
# fill the two cores, and two torch thread pools per core would spin against each other. (Set before torch loads.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
RISEBENCH = ROOT.parent / "shared" / "data" / "risebench"
DEMO = ROOT / "data" / "demo"
# A run that only judges: the identity editor (no diffusion) and the tiny judge.
IDENTITY_RUN = {"editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32",
                "judge_min_digit_mass": 0.0}


# --- the command line in a fresh interpreter, and small runs on the demo data ---------------------------


HEAVY = ("torch", "diffusers", "transformers")  # the model libraries a config error must not import

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


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A session folder every pytest-xdist worker of this run sees (the workers' temp roots share a parent)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / name
    path.mkdir(exist_ok=True)
    return path


def built_once(tmp_path_factory, name: str, build):
    """`build(folder)`'s result, computed by the first worker that asks and read back by the others: a JSON-able
    value, made once per test run whatever the number of pytest-xdist workers."""
    from filelock import FileLock

    folder = shared_folder(tmp_path_factory, name)
    done = folder / "built.json"
    with FileLock(str(folder) + ".lock"):
        if not done.is_file():
            try:
                value = {"value": build(folder)}
            except BaseException as err:  # the other workers fail at once with it, not by building again in a
                value = {"error": f"{type(err).__name__}: {err}"}  # half-written folder
                done.write_text(json.dumps(value))
                raise
            done.write_text(json.dumps(value))
    built = json.loads(done.read_text())
    if "error" in built:
        pytest.fail(f"building {name!r} failed in another worker: {built['error'][:2000]}")
    return built["value"]


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Tiny models are built once per test run in a temporary cache, never in the user's home (shared by the
    pytest-xdist workers: the builder takes a file lock per model)."""
    path = os.environ.get("BENCH_TEST_TINY_CACHE") or str(shared_folder(tmp_path_factory, "tiny-cache"))
    old = os.environ.get("BENCH_TINY_CACHE")
    os.environ["BENCH_TINY_CACHE"] = path
    yield Path(path)
    if old is None:
        os.environ.pop("BENCH_TINY_CACHE", None)
    else:
        os.environ["BENCH_TINY_CACHE"] = old


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """Five demo samples edited and judged by one plain process (tiny models): the result every multi-process,
    resumed and cluster run of the same samples must reproduce. Made once per test run, read-only for tests."""
    from test_multiprocess import REFERENCE_ARGS, make_manifest, run

    def build(folder):
        manifest = make_manifest(folder, 5)
        out, _, _ = run(folder, "one-process", 1, manifest, *REFERENCE_ARGS)
        return [str(manifest), str(out)]

    manifest, out = map(Path, built_once(tmp_path_factory, "reference", build))
    from bench_lib.store import read_results

    return manifest, (out, read_results(out / "results.jsonl"), json.loads((out / "report.json").read_text()))


# The files that take longest (launched multi-process runs, tiny Qwen-Image-Edit edits), collected first: pytest-xdist
# (`--dist loadfile`) hands whole files to its workers in collection order, so the long ones start early and the
# short ones fill in around them instead of one long file running alone at the end.
LONG_FILES = ("test_training_example.py", "test_readme.py", "test_sweep.py", "test_multiprocess.py", "test_resume.py",
              "test_scripts.py", "test_judge.py", "test_editor.py", "test_precomputed.py", "test_judge_server.py",
              "test_slurm.py", "test_protocols.py", "test_store.py", "test_risebench.py", "test_runner.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the order within a file stays
