import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launch import ROOT, WORKER, accelerate_launch
from test_multiprocess import make_manifest

import bench_lib.cli as cli
from bench_lib.config import ConfigError
from bench_lib.store import InconsistentRun, edit_path, read_results, read_run, safe_stem, sample_seed


def test_seed_depends_on_seed_and_id_only():
    assert sample_seed(0, "a") != sample_seed(1, "a")
    assert sample_seed(0, "a") != sample_seed(0, "b")
    assert sample_seed(1, "0") != sample_seed(10, "")  # the separator keeps (seed, id) pairs apart
    assert 0 <= sample_seed(123, "x" * 1000) < 2**63
    # golden value (the first 63 bits of sha256(b"0\x00physics_01")): changing the derivation silently changes
    # every published result
    assert sample_seed(0, "physics_01") == 2847034639418424992


def test_safe_names():
    assert safe_stem("causal_reasoning_3") == "causal_reasoning_3"
    hostile = ["../../etc/passwd", "a/b", "a\\b", "a\x00b", "x" * 300, "x" * 301, "猫", "🙂", ".", "..", "",
               "Cup", "cup", "CUP", "a b", "a_b", "-rf", "con"]
    stems = [safe_stem(i) for i in hostile]
    assert len({stem.casefold() for stem in stems}) == len(stems)  # unique even where case doesn't count
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and "\x00" not in stem and not stem.startswith(".")
        assert 0 < len(stem) <= 120
    assert safe_stem("a/b") != safe_stem("a_b")  # would collide after plain sanitising
    assert safe_stem("cup") == "cup" and safe_stem("Cup").startswith("cup-")
    assert edit_path("a/b").startswith("edits/") and edit_path("a/b").count("/") == 1


def test_run_folder_resume_rules(tmp_path):
    import pytest

    from bench_lib.config import ConfigError
    from bench_lib.store import RunFolder

    folder = RunFolder(tmp_path / "out")
    fp = {"seed": 0, "editor_model": "e"}
    assert folder.prepare(fp, overwrite=False) == 1
    assert folder.prepare(fp, overwrite=False) == 2
    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        folder.prepare({**fp, "seed": 1}, overwrite=False)
    writer = folder.record_writer(2, "edit", 0)
    (tmp_path / "out" / "edits").mkdir()
    (tmp_path / "out" / "edits" / "a.png").write_bytes(b"12345")
    writer.write([{"id": "a", "status": "ok", "edited_image": "edits/a.png", "error": None, "flags": [], "size": 5},
                  {"id": "b", "status": "edit_failed", "edited_image": None, "error": "x", "flags": []}])
    folder.record_writer(2, "judge", 1).write([{"id": "a", "status": "ok", "score": 5.0}])
    with open(writer.path, "a") as f:
        f.write('{"id": "c", "sta')  # torn by a kill
    edits, judgements = folder.read_records()
    assert set(edits) == {"a", "b"} and set(judgements) == {"a"}
    assert folder.edit_is_reusable(edits["a"]) and not folder.edit_is_reusable(edits["b"])
    (tmp_path / "out" / "edits" / "a.png").write_bytes(b"123")  # not the recorded file
    assert not folder.edit_is_reusable(edits["a"])
    # a newer edit record makes the older judgement stale
    folder.record_writer(3, "edit", 0).write([{"id": "a", "status": "edit_failed", "edited_image": None,
                                               "error": "oom", "flags": []}])
    edits, judgements = folder.read_records()
    assert edits["a"]["status"] == "edit_failed" and judgements == {}
    assert RunFolder(tmp_path / "out").prepare({**fp, "seed": 1}, overwrite=True) == 1
    assert not (tmp_path / "out" / "records").exists() and not (tmp_path / "out" / "edits").exists()


def test_a_folder_with_results_but_no_run_file_is_refused(tmp_path):
    import pytest

    from bench_lib.config import ConfigError
    from bench_lib.store import RunFolder

    (tmp_path / "results.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="--overwrite"):
        RunFolder(tmp_path).prepare({"seed": 0}, overwrite=False)


def test_json_nested_too_deeply_is_a_foreign_file_not_a_traceback(tmp_path):
    """run.json, report.json or sweep.json nested past Python's recursion limit: one line, as any foreign file."""
    from bench_lib.store import RunFolder
    from bench_lib.sweep import read_sweep

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "run.json").write_text(deep)
    with pytest.raises(ConfigError, match="not this harness's run file"):
        RunFolder(tmp_path).prepare({"seed": 0}, overwrite=False)
    (tmp_path / "run.json").write_text('{"fingerprint": {}, "attempts": 1}')
    (tmp_path / "results.jsonl").write_text("")
    (tmp_path / "report.json").write_text(deep)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_run(tmp_path)
    (tmp_path / "sweep.json").write_text(deep)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_sweep(tmp_path)


def test_a_file_of_another_name_in_records_is_not_an_attempt(tmp_path):
    """A copy a file manager made (`attempt-0001 copy.edit...`) or any other file in records/ was a ValueError
    traceback at the next start; it is no attempt's record (and the attempt count goes on from the real ones)."""
    from bench_lib.store import RunFolder

    folder = RunFolder(tmp_path)
    assert folder.prepare({"seed": 0}, overwrite=False) == 1
    folder.record_writer(1, "edit", 0).write([{"id": "a", "status": "edit_failed"}])
    for name in ("attempt-0001 copy.edit.rank-00000.jsonl", "attempt-x.edit.rank-00000.jsonl", "attempt-.jsonl"):
        (tmp_path / "records" / name).write_text("")
    assert folder.prepare({"seed": 0}, overwrite=False) == 2
    assert list(folder.read_records()[0]) == ["a"]


def test_overwrite_and_rollback_of_the_run_file(tmp_path):
    import pytest

    from bench_lib.config import ConfigError
    from bench_lib.store import RunFolder

    folder = RunFolder(tmp_path)
    (tmp_path / "run.json").write_text('{"fingerpr')  # torn, or written by another tool
    with pytest.raises(ConfigError, match="not this harness's run file"):
        folder.prepare({"seed": 0}, overwrite=False)
    assert folder.prepare({"seed": 0}, overwrite=True) == 1
    folder.record_writer(1, "edit", 0).write([{"id": "a", "status": "edit_failed"}])
    folder.record_writer(4, "edit", 0).write([{"id": "a", "status": "edit_failed"}])
    assert folder.prepare({"seed": 0}, overwrite=False) == 5  # never reuses an attempt number on disk


# --- links and odd files in the output folder ---------------------------------------------------------------

JUDGE_ONLY = ["--editor", "identity", "--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32",
              "--judge_min_digit_mass", "0", "--dataset", "data/demo/manifest.jsonl", "--limit", "2",
              "--gallery", "false"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def state(path):
    if path.is_dir():
        return sorted(os.listdir(path))
    return path.read_bytes() if path.exists() else None


def _link_to_file(lock, outside):
    outside.write_text("precious\n")
    lock.symlink_to(outside)


def _dangling_link(lock, outside):
    lock.symlink_to(outside)  # O_CREAT through it would create `outside`


def _link_to_folder(lock, outside):
    outside.mkdir()
    lock.symlink_to(outside, target_is_directory=True)


def _folder(lock, outside):
    lock.mkdir()


def _fifo(lock, outside):
    os.mkfifo(lock)


def _hard_link(lock, outside):
    outside.write_text("precious\n")
    os.link(outside, lock)  # the same file under a second name: truncating the lock would truncate it


@pytest.mark.parametrize("make", [_link_to_file, _dangling_link, _link_to_folder, _folder, _fifo, _hard_link])
def test_a_lock_that_is_not_a_plain_file_is_one_line_and_exit_2(tmp_path, capsys, make):
    from bench_lib import cli

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    make(out / ".lock", outside)
    before = state(outside)
    assert cli.main([*JUDGE_ONLY, "--output_dir", str(out)]) == 2
    assert ".lock" in one_line_error(capsys)
    assert state(outside) == before  # nothing written (or created) through the link
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # and nothing else written


def test_record_files_are_never_appended_through_a_link(tmp_path):
    from bench_lib.store import RunFolder

    folder = RunFolder(tmp_path / "out")
    assert folder.prepare({"seed": 0}, overwrite=False) == 1
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out" / "records").mkdir()
    (tmp_path / "out" / "records" / "attempt-0001.edit.rank-00000.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="link"):
        folder.record_writer(1, "edit", 0).write([{"id": "a", "status": "edit_failed"}])
    assert victim.read_text() == "precious\n"
    # a records folder replaced by a link after the start is not written through either
    (tmp_path / "out" / "records").rename(tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "records").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(OSError, match="link"):
        folder.record_writer(1, "edit", 1).write([{"id": "a", "status": "edit_failed"}])
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_hard_linked_record_file_is_copied_before_it_is_appended_to(tmp_path):
    """A folder snapshot made with `cp -al` (or rsync --link-dest) shares its record files' inodes with the run:
    appending in place would change the snapshot (a file outside the output folder) too."""
    from bench_lib.store import RunFolder

    folder = RunFolder(tmp_path / "out")
    folder.prepare({"seed": 0}, overwrite=False)
    writer = folder.record_writer(1, "edit", 0)
    writer.write([{"id": "a", "status": "edit_failed"}])
    snapshot = tmp_path / "snapshot.jsonl"
    os.link(writer.path, snapshot)
    before = snapshot.read_bytes()
    writer.write([{"id": "b", "status": "edit_failed"}])
    writer.write([{"id": "c", "status": "edit_failed"}])
    assert snapshot.read_bytes() == before  # the snapshot is as it was
    assert [json.loads(line)["id"] for line in writer.path.read_text().splitlines()] == ["a", "b", "c"]
    assert os.stat(writer.path).st_nlink == 1


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("name", ["edits", "records", "baselines", "report.json"])
def test_a_link_in_the_output_folder_is_refused_and_nothing_is_deleted_through_it(tmp_path, name, overwrite):
    from bench_lib.store import RunFolder

    out = tmp_path / "out"
    RunFolder(out).prepare({"seed": 0}, overwrite=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"keep")
    (outside / ".keep.png.abc123.tmp").write_bytes(b"keep")  # the shape of a temporary file the harness removes
    target = outside if name != "report.json" else outside / "keep.png"
    (out / name).symlink_to(target, target_is_directory=target.is_dir())
    with pytest.raises(ConfigError, match=f"{name}.*link"):
        RunFolder(out).prepare({"seed": 0}, overwrite=overwrite)
    assert sorted(p.name for p in outside.iterdir()) == [".keep.png.abc123.tmp", "keep.png"]
    assert (out / name).is_symlink() and json.loads((out / "run.json").read_text())["attempts"] == 1


def test_overwrite_with_a_linked_edits_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from bench_lib import cli

    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "mine.png").write_bytes(b"mine")
    out.mkdir()
    (out / "edits").symlink_to(outside, target_is_directory=True)
    (out / "run.json").write_text(json.dumps({"fingerprint": {}, "attempts": 1}))
    assert cli.main([*JUDGE_ONLY, "--output_dir", str(out), "--overwrite"]) == 2
    assert "edits" in one_line_error(capsys)
    assert [p.name for p in outside.iterdir()] == ["mine.png"] and (out / "edits").is_symlink()


def test_a_link_inside_an_owned_folder_is_refused(tmp_path):
    from bench_lib.store import RunFolder

    out = tmp_path / "out"
    RunFolder(out).prepare({"seed": 0}, overwrite=False)
    (out / "records").mkdir()
    (tmp_path / "victim").write_text("precious\n")
    (out / "records" / "attempt-0002.edit.rank-00000.jsonl").symlink_to(tmp_path / "victim")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="attempt-0002.edit.rank-00000.jsonl.*link"):
            RunFolder(out).prepare({"seed": 0}, overwrite=overwrite)
    assert (tmp_path / "victim").read_text() == "precious\n"
    assert json.loads((out / "run.json").read_text())["attempts"] == 1


@pytest.mark.parametrize("make", ["fifo", "folder"])
def test_a_record_that_is_not_a_plain_file_is_refused_not_read(tmp_path, make):
    """A FIFO named like a record file blocked the resume that read the records forever; a folder so named was an
    IsADirectoryError traceback. Either is one line, with or without --overwrite, before anything is changed."""
    import os

    from bench_lib.store import RunFolder

    out = tmp_path / "out"
    RunFolder(out).prepare({"seed": 0}, overwrite=False)
    (out / "records").mkdir()
    odd = out / "records" / "attempt-0001.edit.rank-00001.jsonl"
    os.mkfifo(odd) if make == "fifo" else odd.mkdir()
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="attempt-0001.edit.rank-00001.jsonl is not a plain file"):
            RunFolder(out).prepare({"seed": 0}, overwrite=overwrite)
    assert os.path.lexists(odd) and json.loads((out / "run.json").read_text())["attempts"] == 1


def test_atomic_writes_replace_a_link_instead_of_writing_through_it(tmp_path):
    from bench_lib.store import write_text

    (tmp_path / "victim").write_text("precious\n")
    (tmp_path / "report.md").symlink_to(tmp_path / "victim")
    write_text(tmp_path / "report.md", "new\n")
    assert (tmp_path / "victim").read_text() == "precious\n"
    assert not (tmp_path / "report.md").is_symlink() and (tmp_path / "report.md").read_text() == "new\n"


def test_a_fingerprint_refusal_names_only_the_keys_that_changed(tmp_path):
    from bench_lib.store import RunFolder

    fp = {"data": {"dataset": "d", "split": "train", "columns": {"id": "index"}},
          "editor": {"editor": "diffusers", "diffusers": {"editor_model": "m", "cache": {}, "compile": "none",
                                                          "editor_kwargs": {"num_inference_steps": 2}}},
          "scoring": 4}
    RunFolder(tmp_path).prepare(fp, overwrite=False)
    changed = json.loads(json.dumps(fp))
    changed["editor"]["diffusers"]["editor_kwargs"]["num_inference_steps"] = 4
    changed["data"]["columns"] = {"id": "key"}
    with pytest.raises(ConfigError) as refused:
        RunFolder(tmp_path).prepare(changed, overwrite=False)
    message = str(refused.value)
    assert "editor.diffusers.editor_kwargs.num_inference_steps: 2 -> 4" in message
    assert "data.columns.id: 'index' -> 'key'" in message
    assert "editor_model" not in message and "split" not in message and "'cache'" not in message


# --- a kill mid-write, and two runs on one folder --------------------------------------------------------


def temporary_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp"))


def test_a_kill_mid_report_leaves_a_folder_readers_refuse_and_the_rerun_cleans_up(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    manifest = make_manifest(tmp_path, 3)
    out = tmp_path / "run"
    args = ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "identity", "--gallery", "false"]
    assert cli.main(args) == 0  # in this process: only the killed run needs one of its own
    assert compare_runs.main([str(out), str(out)]) == 0  # finished and consistent
    capsys.readouterr()

    # Same data, another score formula: results.jsonl is rewritten, then the kill hits before report.json.
    killed = accelerate_launch(1, [*args, "--score_formula", "mean"], timeout=300, check=False,
                               env={"BENCH_TEST_KILL_REPLACE": "0:report.json"})
    assert killed.returncode != 0
    left = temporary_files(out)
    assert [p.name.startswith(".report.json.") for p in left] == [True]  # the complete temporary report

    with pytest.raises(InconsistentRun, match="results.jsonl"):
        read_run(out)
    assert compare_runs.main([str(out), str(out)]) == 2  # new results beside the old report: refused
    assert "different reporting passes" in capsys.readouterr().err

    assert cli.main([*args, "--score_formula", "mean"]) == 0  # the same command again
    assert temporary_files(out) == []
    run = read_run(out)
    assert run["report"]["meta"]["score_formula"] == "mean" and run["report"]["stamp"]["attempt"] == 3
    assert compare_runs.main([str(out), str(out)]) == 0

    # --overwrite removes a temporary file too, wherever the harness writes
    for folder in (out, out / "edits", out / "records", out / "baselines"):
        folder.mkdir(exist_ok=True)
        (folder / ".x.png.abc123.tmp").write_bytes(b"half")
    assert cli.main([*args, "--overwrite"]) == 0
    assert temporary_files(out) == []


def test_a_second_run_on_a_busy_folder_exits_at_once_and_a_killed_run_leaves_no_lock(tmp_path):
    manifest = make_manifest(tmp_path, 2)
    out = tmp_path / "busy"
    args = ["--dataset", str(manifest), "--output_dir", str(out), "--editor", "identity", "--gallery", "false"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "BENCH_EXPECT_WORLD_SIZE": "1",
           "BENCH_TEST_SLOW_EDIT": "30", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, str(WORKER), *args], cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("edits/*.png")):  # the first run is editing (and sleeping after its first edit)
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start editing"
            time.sleep(0.5)
        second = accelerate_launch(2, [*args, "--overwrite"], timeout=300, check=False)
        assert second.returncode == 1  # exit code 2 in the workers; accelerate launch reports any failure as 1
        assert f"{out} is in use by another run (host {socket.gethostname()}, pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr.split(f"{out} is in use")[0][-2000:]
        assert first.poll() is None and list(out.glob("edits/*.png"))  # --overwrite deleted nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9: the lock file stays behind, its lock does not
        first.wait()
    assert (out / ".lock").is_file()
    assert cli.main(args) == 0  # the stale lock file does not block the next run
    assert [r["status"] for r in read_results(out / "results.jsonl")] == ["ok"] * 2


def test_a_lock_taken_on_a_file_another_run_unlinked_meanwhile_is_taken_again_on_the_folder_s_lock(
        tmp_path, monkeypatch):
    """A run refused after making the folder removes its lock file while a second run may hold it open: that
    second run's flock then locked a file no other run can find, and a third made a new .lock and ran beside
    it. The lock is only taken when the path still names the locked file."""
    import fcntl

    from bench_lib.store import FolderLock

    real, calls = fcntl.flock, []

    def flock(fd, operation):
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(tmp_path / "out" / ".lock")  # the refused run's release, between our open and our flock
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = FolderLock(tmp_path / "out")
    assert lock.acquire() and len(calls) == 2
    held = os.fstat(lock._fd)
    assert (os.stat(tmp_path / "out" / ".lock").st_ino, os.stat(tmp_path / "out" / ".lock").st_dev) == \
        (held.st_ino, held.st_dev)
    lock.release()


def test_an_id_shaped_like_a_hashed_name_gets_its_own_hash():
    from bench_lib.store import safe_stem

    hashed = safe_stem("Cup")
    assert safe_stem(hashed) != hashed  # so the literal id can't take the file of "Cup"
