from bench_lib.store import edit_path, safe_stem, sample_seed


def test_seed_depends_on_seed_and_id_only():
    assert sample_seed(0, "a") == sample_seed(0, "a")
    assert sample_seed(0, "a") != sample_seed(1, "a")
    assert sample_seed(0, "a") != sample_seed(0, "b")
    assert sample_seed(1, "0") != sample_seed(10, "")  # the separator keeps (seed, id) pairs apart
    assert 0 <= sample_seed(123, "x" * 1000) < 2**63
    # golden value: changing the derivation silently changes every published result
    assert sample_seed(0, "physics_01") == int.from_bytes(
        __import__("hashlib").sha256(b"0\x00physics_01").digest()[:8], "big") & (2**63 - 1)


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
