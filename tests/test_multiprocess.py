"""Real multi-process runs: `accelerate launch` subprocesses on CPU; workers assert the world size."""

import json
import shutil
from pathlib import Path

import pytest
from launch import TINY_ARGS, accelerate_launch

from bench_lib.store import read_results

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
REFERENCE_ARGS = ("--edit_batch_size", "1", "--judge_batch_size", "2")  # the session's reference run (conftest.py)


def make_manifest(folder: Path, num_samples: int) -> Path:
    """The first `num_samples` demo samples, copied with their images into `folder`."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()][:num_samples]
    for row in rows:
        for key in ("source_image", "reference_image"):
            if key in row:
                (folder / row[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(DEMO / row[key], folder / row[key])
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path, name, num_processes, manifest, *extra, timeout=300):
    out = tmp_path / name
    accelerate_launch(num_processes, ["--dataset", str(manifest), "--output_dir", str(out), *TINY_ARGS, *extra],
                      timeout=timeout)
    markers = sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json"))
    assert markers == list(range(num_processes))  # every launched rank finished and saw the right world size
    return out, read_results(out / "results.jsonl"), json.loads((out / "report.json").read_text())


def assert_same_results(run_a, run_b):
    (out_a, rows_a, _), (out_b, rows_b, _) = run_a, run_b
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        # Edits are bitwise identical; judge scores agree to float precision (batch composition
        # changes matmul shapes, so the last bits can move), far inside the 1e-4 contract.
        close = ("score", "subscores", "digit_mass", "metrics", "answers")
        skip = (*close, "attempts")  # which attempt did the work is provenance, not a result
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["subscores"] == pytest.approx(b["subscores"], abs=1e-4)
        assert a["digit_mass"] == pytest.approx(b["digit_mass"], rel=1e-3)
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-4)
        assert a["answers"] == pytest.approx(b["answers"], abs=1e-4)
        assert (out_a / a["edited_image"]).read_bytes() == (out_b / b["edited_image"]).read_bytes()


def test_five_samples_same_results_on_1_2_3_processes(tmp_path, reference_run):
    manifest, one = reference_run  # 1 process: edit batches of 1, judge batches of 2
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in one[1]] == ids and all(r["status"] == "ok" for r in one[1])
    assert one[2]["meta"]["world_size"] == 1 and one[2]["meta"]["editor_model"] == "tiny:flux-kontext"  # the recipe
    # 2 ranks: shards of 3 and 2, batches of 2 -> rank 1 runs an empty second batch (and its barrier).
    two = run(tmp_path, "p2", 2, manifest, "--edit_batch_size", "2", "--judge_batch_size", "2")
    # 3 ranks: shards 2, 2, 1 with a barrier after every sample; a short timeout turns a hang into a failure.
    three = run(tmp_path, "p3", 3, manifest, "--edit_batch_size", "1", "--judge_batch_size", "4",
                "--process_group_timeout", "90")
    assert two[2]["meta"]["world_size"] == 2 and three[2]["meta"]["world_size"] == 3
    assert_same_results(one, two)
    assert_same_results(one, three)
    # Judge batches are planned over all ranks' work, so with the same judge_batch_size a batch holds the
    # same samples on 1 and 2 processes and the scores are bitwise equal, not just close.
    assert [(r["score"], r["subscores"]) for r in one[1]] == [(r["score"], r["subscores"]) for r in two[1]]
    assert len(one[2]["timings"]["per_rank"]) == 1 and len(three[2]["timings"]["per_rank"]) == 3
    # Judge batches are dealt over the ranks across every judge job: no rank idles while another judges all.
    for report in (two[2], three[2]):
        judged = [r["judged"] for r in report["timings"]["per_rank"]]
        assert all(n > 0 for n in judged) and sum(judged) == report["timings"]["judge_samples"], judged


def test_more_processes_than_samples(tmp_path):
    manifest = make_manifest(tmp_path, 1)
    # rank 1 has nothing to edit or judge (the identity editor: what is tested is the empty shard's barriers)
    out, rows, report = run(tmp_path, "p2", 2, manifest, "--process_group_timeout", "90", "--editor", "identity")
    assert [r["id"] for r in rows] == ["physics_01"] and rows[0]["status"] == "ok"
    assert report["overall"]["count"] == 1 and report["meta"]["world_size"] == 2
