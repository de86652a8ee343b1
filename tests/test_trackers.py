"""Experiment trackers through accelerate (bench_lib.tracking): TensorBoard's event files and W&B's offline run
hold the metrics at the right steps; a sweep variant logs at the step its name carries; a bad tracker name is one
line and exit code 2 before torch loads. Edits are precomputed (no editor model): judge time only."""

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import bench_lib
from bench_lib.api import resolve_config

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "manifest.jsonl"


def small_run_inputs(folder: Path) -> tuple[Path, Path]:
    """A manifest of four demo samples over two categories (their images copied beside it), and a folder of
    'edits' of them (each source mirrored)."""
    from PIL import Image, ImageOps

    rows = [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]
    categories = list(dict.fromkeys(r["category"] for r in rows))[:2]
    picked = [r for c in categories for r in [x for x in rows if x["category"] == c][:2]]
    edits = folder / "edits"
    edits.mkdir()
    lines = []
    for row in picked:
        row = {**row}
        for key in ("source_image", "reference_image"):
            if row.get(key):
                (folder / row[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(DEMO.parent / row[key], folder / row[key])
        with Image.open(folder / row["source_image"]) as image:
            ImageOps.mirror(image.convert("RGB")).save(edits / f"{row['id']}.png")
        lines.append(json.dumps(row))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, edits


def event_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the TensorBoard event files under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                out.setdefault(tag, {})[event.step] = event.value
    return out


def event_tags(folder: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, list[str]] = {"images": [], "tensors": []}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "tensors": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] += accumulator.Tags()[kind]
    return tags


def wandb_history(run_file: Path) -> list[tuple[int, dict[str, str]]]:
    """(step, {key: JSON value}) of every history record in a W&B offline run's .wandb file: a LevelDB-style log
    (a 7-byte header, 32 KiB blocks of chunks each with a 7-byte header) of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end it
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                out.append((record.history.step.num,
                            {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}))
    return out


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One evaluation (4 samples, 2 categories, precomputed edits) logged to TensorBoard and W&B (offline) at step
    7, with the trackers' folder outside output_dir."""
    folder = tmp_path_factory.mktemp("trackers")
    manifest, edits = small_run_inputs(folder)
    logs = folder / "elsewhere" / "logs"
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(folder / "wandb-dir"), "WANDB_SILENT": "true",
           "WANDB_DISABLE_GIT": "true", "WANDB_CONSOLE": "off"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = bench_lib.evaluate("configs/smoke.yaml", step=7, dataset=str(manifest), editor="precomputed",
                                    edits_dir=str(edits), baselines="", gallery=False,
                                    output_dir=str(folder / "out"), log_with="tensorboard,wandb",
                                    tracker_project="trackers-test", logging_dir=str(logs))
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return result, logs


def test_tensorboard_holds_the_metrics_at_the_step(tracked_run):
    result, logs = tracked_run
    scalars = event_scalars(logs / "trackers-test")
    score = result.score
    assert scalars["eval/score"] == {7: pytest.approx(score.mean)}
    assert scalars["eval/score_ci_low"][7] == pytest.approx(score.ci95[0])
    assert scalars["eval/score_ci_high"][7] == pytest.approx(score.ci95[1])
    assert scalars["eval/count"][7] == 4
    for category, metrics in result.categories.items():
        assert scalars[f"eval/{category}/score"][7] == pytest.approx(metrics["score"].mean)
    tags = event_tags(logs / "trackers-test")
    assert sorted(t for t in tags["images"]) == sorted(f"eval/samples/{r}" for r in _ids(result))
    assert any(t.startswith("eval/categories") for t in tags["tensors"])  # the per-category table, as text


def test_wandb_offline_files_hold_the_metrics_at_the_step(tracked_run):
    result, logs = tracked_run
    runs = sorted((logs / "wandb").glob("offline-run-*/run-*.wandb"))  # under logging_dir, not WANDB_DIR
    assert len(runs) == 1
    history = wandb_history(runs[0])
    merged: dict[str, str] = {}
    for step, items in history:
        assert step == 7
        merged.update(items)
    assert float(merged["eval/score"]) == pytest.approx(result.score.mean)
    assert float(merged["eval/score_ci_low"]) == pytest.approx(result.score.ci95[0])
    assert json.loads(merged["eval/categories/_type"]) == "table-file"
    assert int(merged["eval/samples/nrows"]) == 4
    table = json.loads((runs[0].parent / "files" / json.loads(merged["eval/samples/path"])).read_text())
    assert table["columns"][:5] == ["id", "category", "instruction", "source", "edit"]
    assert [row[0] for row in table["data"]] == _ids(result)


def test_nothing_is_written_in_output_dir_for_the_trackers(tracked_run):
    result, _ = tracked_run
    assert not (result.output_dir / "logs").exists()  # logging_dir was named elsewhere


def test_a_sweep_variant_logs_at_the_step_its_name_carries(tracked_run, tmp_path):
    """The runner's tracker step for sweep units, into an Accelerator's trackers that the caller started."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from bench_lib.distributed import Distributed
    from bench_lib.runner import Unit, log_to_trackers
    from bench_lib.store import RunFolder

    result, _ = tracked_run
    for name in ("base", "checkpoint-500"):
        shutil.copytree(result.output_dir, tmp_path / "sweep" / name)
    accelerator = Accelerator(log_with="tensorboard", project_config=ProjectConfiguration(
        project_dir=str(tmp_path), logging_dir=str(tmp_path / "caller-logs")))
    accelerator.init_trackers("training")
    cfg = resolve_config("configs/smoke.yaml", {"output_dir": str(tmp_path / "sweep")})
    samples = _samples(result)
    units = [Unit(cfg, RunFolder(tmp_path / "sweep" / name), label=name) for name in ("base", "checkpoint-500")]
    log_to_trackers(cfg, Distributed(timeout_s=60, accelerator=accelerator), units, samples, step=None,
                    logging_dir=str(tmp_path / "unused"))
    accelerator.end_training()
    assert set(event_scalars(tmp_path / "caller-logs")["eval/score"]) == {0, 500}
    assert not (tmp_path / "unused").exists()  # the caller's trackers: none started


def test_a_sweep_logs_its_variants_in_step_order(tracked_run, tmp_path):
    """Units in the sweep's order (checkpoints first, then names without a step): `final` (step 0) was logged
    after checkpoint-500, and W&B drops a log at a step below the current one (its values were lost)."""
    from accelerate import Accelerator

    from bench_lib.distributed import Distributed
    from bench_lib.runner import Unit, log_to_trackers
    from bench_lib.store import RunFolder

    class Recorder:
        name = "recorder"
        steps: list = []

        def log(self, values, step):
            self.steps.append((step, values["eval/score"]))

    result, _ = tracked_run
    names = ("checkpoint-500", "final")
    for name in names:
        shutil.copytree(result.output_dir, tmp_path / "sweep" / name)
    accelerator = Accelerator()
    accelerator.trackers = [Recorder()]
    cfg = resolve_config("configs/smoke.yaml", {"output_dir": str(tmp_path / "sweep")})
    units = [Unit(cfg, RunFolder(tmp_path / "sweep" / name), label=name) for name in names]
    log_to_trackers(cfg, Distributed(timeout_s=60, accelerator=accelerator), units, _samples(result), step=None,
                    logging_dir=str(tmp_path / "unused"))
    assert [step for step, _ in Recorder.steps] == [0, 500]


def test_an_unknown_tracker_is_one_line_and_exit_code_2():
    code = ("import sys; from bench_lib.cli import main; rc = main(['--log_with', 'tensorbord', '--limit', '1']); "
            "print('torch' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout.strip() == "False"  # answered before torch was imported
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: `log_with`: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)")


def test_the_default_logging_dir_is_inside_output_dir():
    cfg = resolve_config("configs/smoke.yaml", {"output_dir": "runs/x", "log_with": "tensorboard"})
    assert cfg.tracking.logging_folder(cfg.run.output_dir) == str(Path("runs/x") / "logs")


def _ids(result) -> list[str]:
    return [json.loads(line)["id"] for line in result.results_jsonl.read_text().splitlines() if line.strip()]


def _samples(result):
    from bench_lib.data import load_benchmark

    cfg = resolve_config("configs/smoke.yaml", {"dataset": result.report["meta"]["dataset"]})
    return load_benchmark(cfg.data)[0]


@pytest.mark.parametrize("project", ["../../../escaped_tb", "a/b", "..", ".", "/tmp/x", "a\\b"])
def test_a_tracker_project_that_is_a_path_is_one_line_and_exit_code_2(project, tmp_path):
    code = ("import sys; from bench_lib.cli import main; rc = main(sys.argv[1:]); print('torch' in sys.modules); "
            "sys.exit(rc)")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", code, "--editor", "identity", "--limit", "2", "--baselines", "",
                           "--log_with", "tensorboard", "--tracker_project", project, "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout.strip() == "False"  # answered before torch was imported
    lines = [line for line in done.stderr.strip().splitlines() if "INFO" not in line]
    assert len(lines) == 1 and "`tracker_project` must be a plain name" in lines[0]
    assert not out.exists()


def _no_wandb_login(tmp_path) -> dict[str, str]:
    """An environment where W&B has neither a key nor an offline mode (no netrc, no settings file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               WANDB_DIR=str(tmp_path))
    return env


def test_wandb_without_a_key_and_not_offline_is_one_line_and_exit_code_2_before_torch(tmp_path):
    code = ("import sys; from bench_lib.cli import main; rc = main(sys.argv[1:]); print('torch' in sys.modules); "
            "sys.exit(rc)")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", code, "--editor", "identity", "--limit", "2", "--baselines", "",
                           "--log_with", "wandb", "--output_dir", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=_no_wandb_login(tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if "INFO" not in line]  # (the INFO line: no --config, the smoke recipe)
    assert len(errors) == 1 and errors[0].startswith("error: `log_with`: wandb has no API key") and not out.exists()


def test_wandb_can_log_offline_with_a_key_or_a_netrc_login(tmp_path, monkeypatch):
    from bench_lib.tracking import wandb_can_log

    for key, value in _no_wandb_login(tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("WANDB_") and k not in ("WANDB_CONFIG_DIR", "WANDB_DIR")]:
        monkeypatch.delenv(key)
    assert not wandb_can_log()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_can_log()
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "wandb-config").mkdir()
    (tmp_path / "wandb-config" / "settings").write_text("[default]\nmode = disabled\n")
    assert wandb_can_log()
    (tmp_path / "wandb-config" / "settings").write_text("[default]\n")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_can_log()
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    assert wandb_can_log()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert not wandb_can_log()  # the login is for another host


@pytest.mark.parametrize("where", ["log", "start", "finish"])
def test_a_tracker_that_raises_is_one_warning_naming_it_and_the_exit_code_stays(tmp_path, monkeypatch, caplog,
                                                                                  where):
    from accelerate.tracking import TensorBoardTracker

    from bench_lib import cli

    def broken(*args, **kwargs):
        raise RuntimeError("the tracker's service said no\nsecond line")

    monkeypatch.setattr(TensorBoardTracker, {"log": "log", "start": "start", "finish": "finish"}[where], broken)
    caplog.set_level(logging.WARNING)
    out = tmp_path / "out"
    assert cli.main(["--editor", "identity", "--limit", "2", "--baselines", "", "--gallery", "false",
                     "--log_with", "tensorboard", "--output_dir", str(out)]) == 0
    assert (out / "report.json").is_file()
    warned = [r.getMessage() for r in caplog.records if "said no" in r.getMessage()]
    assert len(warned) == 1 and "tensorboard" in warned[0] and "\n" not in warned[0], warned
    assert not any(r.exc_info for r in caplog.records)
