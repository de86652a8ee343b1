"""The precomputed editor: edits made elsewhere, read from a folder (or a dataset column) and judged."""

import hashlib
import json
import os
import shutil
import threading

import pytest
from conftest import IDENTITY_RUN
from launch import accelerate_launch
from PIL import Image
from test_multiprocess import make_manifest

import bench_lib.cli as cli
import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import ConfigError, DataConfig
from bench_lib.data import load_samples
from bench_lib.editors.precomputed import PrecomputedConfig, PrecomputedEditor
from bench_lib.store import read_results, read_run, safe_stem

JUDGE = ["--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32", "--judge_min_digit_mass", "0",
         "--gallery", "false", "--baselines", ""]


def source_copies(tmp_path, manifest, name="edits-elsewhere"):
    """A folder holding each sample's source image under the sample's own name (PNG)."""
    folder = tmp_path / name
    folder.mkdir()
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        with Image.open(manifest.parent / row["source_image"]) as image:
            image.convert("RGB").save(folder / f"{safe_stem(row['id'])}.png")
    return folder


def precomputed(manifest, edits, out):
    return ["--dataset", str(manifest), "--editor", "precomputed", "--edits_dir", str(edits),
            "--output_dir", str(out), *JUDGE]


def edit_records(out):
    return [json.loads(line) for path in sorted((out / "records").glob("attempt-*.edit.*.jsonl"))
            for line in path.read_text().splitlines()]


def test_an_edit_replaced_between_a_run_and_its_resume_is_read_and_judged_again(tmp_path):
    manifest = make_manifest(tmp_path, 3)
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    edits = source_copies(tmp_path, manifest)
    out = tmp_path / "run"
    # first given relative to the working folder, then absolute: the same folder, so the run resumes
    assert cli.main(precomputed(manifest, os.path.relpath(edits), out)) == 0
    first = read_run(out)["rows"]

    changed = edits / f"{safe_stem(ids[0])}.png"
    with Image.open(changed) as image:
        image.transpose(Image.Transpose.ROTATE_180).resize((48, 40)).save(changed)
    assert cli.main(precomputed(manifest, edits, out)) == 0
    resumed = read_run(out)

    fresh_out = tmp_path / "fresh"
    assert cli.main(precomputed(manifest, edits, fresh_out)) == 0
    fresh = read_run(fresh_out)["rows"]
    assert abs(fresh[0]["score"] - first[0]["score"]) > 1e-3  # the new edit scores differently: the check has teeth
    assert resumed["report"]["meta"]["attempt"] == 2 and resumed["report"]["meta"]["reused_edits"] == 2
    assert [(r["id"], r["status"]) for r in resumed["rows"]] == [(r["id"], r["status"]) for r in fresh]
    for row, expected in zip(resumed["rows"], fresh):  # batch composition moves the last bits only
        assert row["subscores"] == pytest.approx(expected["subscores"], abs=1e-4)
    with Image.open(out / resumed["rows"][0]["edited_image"]) as image:
        assert image.size == (48, 40)  # the output folder's copy is the new edit
    latest = {r["id"]: r for r in edit_records(out)}
    assert latest[ids[0]]["attempt"] == 2 and latest[ids[1]]["attempt"] == 1
    assert latest[ids[0]]["edit_sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest()

    # an edit that disappeared is that sample's edit_failed now, not the old image's score
    changed.unlink()
    assert cli.main(precomputed(manifest, edits, out)) == 0
    rows = read_run(out)["rows"]
    assert [r["status"] for r in rows] == ["edit_failed", "ok", "ok"] and "no edit for this sample" in rows[0]["error"]


def test_edits_inside_the_output_folder_are_refused_before_anything_is_deleted(tmp_path, capsys):
    """Judging a run's own edits again in its folder (`--edits_dir run/edits --output_dir run --overwrite`) would
    have --overwrite delete the very edits the run reads: the edits are inputs, refused inside output_dir."""
    manifest = make_manifest(tmp_path, 2)
    out = tmp_path / "run"
    out.mkdir()
    edits = source_copies(out, manifest, name="edits")
    before = {p.name: p.read_bytes() for p in edits.iterdir()}
    for extra in (["--overwrite"], []):
        assert cli.main([*precomputed(manifest, edits, out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is inside `output_dir`" in err
        assert {p.name: p.read_bytes() for p in edits.iterdir()} == before


def test_a_fifo_in_edits_dir_is_that_sample_edit_failed_not_a_hang(tmp_path):
    manifest = make_manifest(tmp_path, 3)
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    edits = source_copies(tmp_path, manifest)
    fifo = edits / f"{safe_stem(ids[1])}.png"
    fifo.unlink()
    os.mkfifo(fifo)
    out = tmp_path / "run"
    # A run that opened the FIFO would block until a writer comes: a watchdog thread comes after 120 s (so the test
    # fails instead of hanging) and says so.
    done, waited = threading.Event(), []

    def watchdog():
        if not done.wait(120):
            waited.append(True)
            with open(fifo, "wb"):
                pass

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        code = cli.main(precomputed(manifest, edits, out))
    finally:
        done.set()
        thread.join()
    assert not waited, "the run waited on the FIFO in edits_dir"
    assert code == 0
    rows = read_run(out)["rows"]
    assert [r["status"] for r in rows] == ["ok", "edit_failed", "ok"]
    assert f"{fifo} is a FIFO (named pipe), not an image file" in rows[1]["error"]


def test_a_symlinked_edit_is_named_as_a_link_out_of_edits_dir(tmp_path):
    manifest = make_manifest(tmp_path, 2)
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    edits = source_copies(tmp_path, manifest)
    elsewhere = tmp_path / "elsewhere.png"
    link = edits / f"{safe_stem(ids[0])}.png"
    link.rename(elsewhere)
    link.symlink_to(elsewhere)
    inside = edits / f"{safe_stem(ids[1])}.png"
    inside.rename(edits / "kept.png")
    inside.symlink_to(edits / "kept.png")  # a link that stays inside the folder is followed
    editor = PrecomputedEditor(PrecomputedConfig(edits_dir=str(edits)), device=None)
    samples = load_samples(DataConfig(dataset=str(manifest)))
    with pytest.raises(ValueError) as refused:
        editor.edit(samples[0], None, seed=0)
    assert str(refused.value) == (f"the edit {link} is a symbolic link to {elsewhere}, outside edits_dir: links out "
                                  "of the folder are not followed (copy the file in)")
    kept = editor.edit(samples[1], None, seed=0)
    assert kept.info["edit_sha256"] == hashlib.sha256((edits / "kept.png").read_bytes()).hexdigest()


def source_files(tmp_path, manifest, *, skip=()):
    """A folder holding each sample's source file, byte for byte, under the sample's own name: the edits of an
    editor that changes nothing."""
    folder = tmp_path / "edits-elsewhere"
    folder.mkdir()
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if row["id"] not in skip:
            suffix = row["source_image"].rsplit(".", 1)[1]
            shutil.copy(manifest.parent / row["source_image"], folder / f"{safe_stem(row['id'])}.{suffix}")
    return folder


def test_precomputed_edits_of_the_sources_score_exactly_as_the_identity_baseline(tmp_path):
    manifest = make_manifest(tmp_path, 5)
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    edits = source_files(tmp_path, manifest, skip={ids[1]})
    out = tmp_path / "pre"
    runner.run(config_from_dict({"dataset": str(manifest), **IDENTITY_RUN, "editor": "precomputed",
                                 "edits_dir": str(edits), "baselines": "identity", "output_dir": str(out),
                                 "judge_batch_size": 1}))
    run = read_run(out)
    rows, identity = run["rows"], run["baselines"]["identity"]
    assert [r["status"] for r in rows] == ["ok", "edit_failed", "ok", "ok", "ok"]
    assert str(edits / ids[1]) in rows[1]["error"] and rows[1]["edited_image"] is None
    for row, base in zip(rows, identity):
        if row["status"] == "ok":
            assert row["score"] == base["score"] and row["subscores"] == base["subscores"]
    edits_used = run["report"]["provenance"]["edits"]
    assert edits_used["count"] == 4 and len(edits_used["sha256"]) == 64
    # from a dataset column instead of a folder: the same edits, the same scores
    files = {p.stem: p.name for p in edits.iterdir()}
    rows_with_column = [dict(row, edit=f"{edits.name}/{files[safe_stem(row['id'])]}" if row["id"] != ids[1] else None)
                        for row in map(json.loads, manifest.read_text().splitlines())]
    (tmp_path / "with_edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_with_column))
    out2 = tmp_path / "pre-column"
    runner.run(config_from_dict({"dataset": str(tmp_path / "with_edits.jsonl"), **IDENTITY_RUN, "editor": "precomputed",
                                 "columns": {"edited_image": "edit"}, "output_dir": str(out2),
                                 "judge_batch_size": 1}))
    column_rows = read_run(out2)["rows"]
    assert [r["status"] for r in column_rows] == [r["status"] for r in rows]
    assert [r["score"] for r in column_rows] == [r["score"] for r in rows]
    with pytest.raises(ConfigError, match="--edits_dir DIR"):
        runner.check_models(config_from_dict({"dataset": str(manifest), **IDENTITY_RUN, "editor": "precomputed"}))


def test_precomputed_on_two_processes(tmp_path):
    manifest = make_manifest(tmp_path, 4)
    edits = source_files(tmp_path, manifest)
    (edits / f"{json.loads(manifest.read_text().splitlines()[0])['id']}.jpg").write_bytes(b"a second edit")
    out = tmp_path / "pre2"
    accelerate_launch(2, ["--dataset", str(manifest), "--editor", "precomputed", "--edits_dir", str(edits),
                          "--baselines", "", "--output_dir", str(out)], timeout=300)
    rows = read_results(out / "results.jsonl")
    assert [r["status"] for r in rows] == ["edit_failed", "ok", "ok", "ok"]  # two edits for one sample: ambiguous
    assert "several edits" in rows[0]["error"]
    assert sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json")) == [0, 1]
