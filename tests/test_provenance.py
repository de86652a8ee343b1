"""Provenance: model revisions, the harness's commit, package versions; and what a run records of them."""

import json
import subprocess

import pytest

from bench_lib import provenance
from bench_lib.models import resolve_model


def test_local_models_are_identified_by_their_config_files(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "config.json").write_text('{"b": 2}')
    (folder / "model.safetensors").write_bytes(b"weights are not read")
    source = provenance.model_source(str(folder), None, "config.json")
    assert source["source"] == "local" and source["path"] == str(folder.resolve())
    first = source["config_sha256"]
    weights = source["weights_sha256"]
    (folder / "model.safetensors").write_bytes(b"other weights")  # a fine-tune: same configs, other weights
    changed = provenance.model_source(str(folder), None, "config.json")
    assert changed["config_sha256"] == first and changed["weights_sha256"] != weights
    (folder / "sub" / "config.json").write_text('{"b": 3}')
    assert provenance.model_source(str(folder), None, "config.json")["config_sha256"] != first
    tiny = provenance.model_source("tiny:qwen3-vl", None, "config.json")
    assert tiny["id"] == "tiny:qwen3-vl" and tiny["path"] == resolve_model("tiny:qwen3-vl")


def test_hub_models_resolve_to_the_cached_commit(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--judge"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    source = provenance.model_source("org/judge", None, "config.json", cache_dir=str(tmp_path))
    assert source == {"id": "org/judge", "requested_revision": None, "source": "hub", "resolved_revision": commit}
    assert provenance.model_source("org/judge", commit, "config.json",
                                   cache_dir=str(tmp_path))["resolved_revision"] == commit
    missing = provenance.model_source("org/other", None, "config.json", cache_dir=str(tmp_path))
    assert missing["resolved_revision"] is None  # not cached: recorded as unresolved, never guessed


def test_harness_commit_and_package_versions():
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=provenance.REPO_ROOT)
    info = provenance.harness_commit()
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert info["commit"] == head.stdout.strip() and isinstance(info["dirty"], bool)
    assert provenance.harness_commit(provenance.REPO_ROOT / "no-such-dir") == {"commit": None, "dirty": None}
    import torch
    import transformers

    versions = provenance.package_versions()
    assert versions["torch"] == torch.__version__ and versions["transformers"] == transformers.__version__


def test_a_run_records_its_provenance(tmp_path):
    from bench_lib import config_from_dict
    from bench_lib.runner import run
    from bench_lib.store import read_results

    out = tmp_path / "run"
    cfg = {"dataset": "data/demo/manifest.jsonl", "output_dir": str(out), "limit": 2, "editor": "identity",
           "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0, "seed": 5,
           "baselines": "blank"}
    run(config_from_dict(cfg))
    run(config_from_dict({**cfg, "limit": 3}))  # a second attempt extends the run
    report = json.loads((out / "report.json").read_text())
    prov = report["provenance"]
    assert prov["models"]["judge"]["config_sha256"] == provenance.config_files_sha256(
        __import__("pathlib").Path(resolve_model("tiny:qwen3-vl")))
    assert prov["models"]["editor"] == {"backend": "identity", "id": "baseline:identity"}
    assert prov["seed"] == 5 and prov["world_size"] == 1 and len(prov["devices"]) == 1
    assert prov["rubrics"] == prov["fingerprint"]["rubrics"] and len(prov["rubrics"]["physics"]) == 64
    assert prov["harness"] == provenance.harness_commit() and prov["packages"]["torch"]
    assert prov["started"] <= prov["finished"]
    assert [h["attempt"] for h in prov["attempts"]] == [1, 2] and prov["attempts"][0]["world_size"] == 1
    rows = read_results(out / "results.jsonl")
    assert [r["attempts"] for r in rows] == [{"edit": 1, "judge": 1}] * 2 + [{"edit": 2, "judge": 2}]
    blank = read_results(out / "baselines" / "blank.jsonl")
    assert [r["attempts"]["judge"] for r in blank] == [1, 1, 2]
    assert rows[0]["rubric_sha256"] == prov["rubrics"]["physics"] == blank[0]["rubric_sha256"]


def test_a_change_anywhere_in_a_large_weight_file_changes_its_digest_and_a_copy_keeps_it(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(provenance, "PIECE_BYTES", 4)  # 100 bytes: 25 pieces hashed on several threads
    data = bytearray(range(100))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_bytes(bytes(data))
    first = provenance.weights_sha256(tmp_path / "model")
    shutil.copytree(tmp_path / "model", tmp_path / "copy")  # new time stamps, same bytes
    assert provenance.weights_sha256(tmp_path / "copy") == first
    seen = {first}
    for at in (0, 21, 50, 99):  # a byte in the first, a middle and the last piece, one a sampled digest missed
        changed = bytearray(data)
        changed[at] ^= 1
        (tmp_path / "model" / "w.safetensors").write_bytes(bytes(changed))
        seen.add(provenance.weights_sha256(tmp_path / "model"))
    swapped = data[4:8] + data[:4] + data[8:]  # two pieces in another order
    (tmp_path / "model" / "w.safetensors").write_bytes(bytes(swapped))
    seen.add(provenance.weights_sha256(tmp_path / "model"))
    assert len(seen) == 6
