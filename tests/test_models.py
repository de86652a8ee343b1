"""bench_lib.models' download step: what it asks the hub for, offline checks of the cache, progress bars."""

import shutil
from pathlib import Path

import huggingface_hub
import pytest
from conftest import DEMO, HEAVY, assert_one_line, probe
from huggingface_hub import constants
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from bench_lib.config import ConfigError
from bench_lib.models import TRANSFORMERS_FILES, download_model, hub_problem, resolve_model


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The hub's two download calls replaced: each records its arguments and returns a copy of a tiny model."""
    import diffusers

    calls = []

    def snapshot(name, tiny):
        folder = tmp_path / f"snapshot-{len(calls)}"
        shutil.copytree(resolve_model(tiny), folder)
        return str(folder)

    def snapshot_download(name, **kwargs):
        calls.append(("snapshot_download", name, kwargs, are_progress_bars_disabled()))
        return snapshot(name, "tiny:qwen3-vl")

    def pipeline_download(cls, name, **kwargs):
        calls.append(("DiffusionPipeline.download", name, kwargs, are_progress_bars_disabled()))
        return snapshot(name, "tiny:qwen-image-edit")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", classmethod(pipeline_download))
    disable_progress_bars()  # as a quiet run has them
    yield calls
    enable_progress_bars()


def test_what_is_fetched_and_how(fake_hub, monkeypatch):
    download_model("judge_model", "org/judge", revision="abc", pipeline=False)
    download_model("editor_model", "org/editor", revision=None, pipeline=True, trust_remote_code=False)
    (judge, editor) = fake_hub
    assert judge[:2] == ("snapshot_download", "org/judge")
    assert judge[2] == {"revision": "abc", "allow_patterns": TRANSFORMERS_FILES, "local_files_only": False}
    assert editor[:2] == ("DiffusionPipeline.download", "org/editor")
    assert editor[2] == {"revision": None, "use_safetensors": True, "local_files_only": False,
                         "trust_remote_code": False}
    assert not judge[3] and not editor[3]  # progress shown while downloading...
    assert are_progress_bars_disabled()  # ... and the quiet setting back afterwards
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    download_model("judge_model", "org/judge", revision=None, pipeline=False)
    assert fake_hub[-1][2]["local_files_only"] is True  # offline: the cache is checked, nothing fetched
    download_model("judge_model", "tiny:qwen3-vl", revision=None, pipeline=False)
    download_model("editor_model", resolve_model("tiny:qwen-image-edit"), revision=None, pipeline=True)
    assert len(fake_hub) == 3  # tiny models and local folders: nothing to fetch


def test_a_snapshot_without_its_weights_is_one_line(fake_hub, monkeypatch):
    import diffusers

    real = diffusers.DiffusionPipeline.download.__func__

    def without_transformer_weights(cls, name, **kwargs):
        folder = real(cls, name, **kwargs)
        weights = list((Path(folder) / "transformer").glob("*.safetensors"))
        assert weights
        for file in weights:
            file.unlink()
        return folder

    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", classmethod(without_transformer_weights))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"lacks weight files: transformer/\*\.safetensors.*hf download org/e"):
        download_model("editor_model", "org/e", revision=None, pipeline=True)

    def unreachable(name, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ConfigError, match="`judge_model` 'org/j'.*could not be found in the cache.*no route"):
        download_model("judge_model", "org/j", revision=None, pipeline=False)
    assert are_progress_bars_disabled()


def test_an_unreachable_hub_uses_a_complete_cached_snapshot(fake_hub, monkeypatch, caplog):
    real = huggingface_hub.snapshot_download

    def cached_only(name, **kwargs):
        if not kwargs["local_files_only"]:
            raise OSError("no route to host")
        return real(name, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached_only)
    download_model("judge_model", "org/judge", revision=None, pipeline=False)  # no error: the cache has it all
    assert "the hub failed (OSError: no route to host); using the cached snapshot" in caplog.text

    def nowhere(name, **kwargs):
        raise OSError("no route to host" if not kwargs["local_files_only"] else "not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", nowhere)
    with pytest.raises(ConfigError, match="could not be downloaded: OSError: no route to host"):
        download_model("judge_model", "org/judge", revision=None, pipeline=False)


def test_missing_weights_reads_shard_indexes_and_only_the_pipeline_s_components(tmp_path):
    import json

    from bench_lib.models import missing_weights

    judge = tmp_path / "judge"
    shutil.copytree(resolve_model("tiny:qwen3-vl"), judge)
    assert missing_weights(judge, pipeline=False) == []
    for weights in judge.glob("*.safetensors"):
        weights.unlink()
    (judge / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (judge / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert missing_weights(judge, pipeline=False) == ["model-00002-of-00002.safetensors"]
    pipe = tmp_path / "pipe"
    shutil.copytree(resolve_model("tiny:qwen-image-edit"), pipe)
    (pipe / "leftover").mkdir()  # a folder model_index.json does not name (an earlier full download's)
    (pipe / "leftover" / "config.json").write_text("{}")
    assert missing_weights(pipe, pipeline=True) == []
    (pipe / "model_index.json").unlink()
    assert missing_weights(pipe, pipeline=True) == ["model_index.json"]


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


def test_a_tiny_cache_that_cannot_be_a_folder_is_one_line(tmp_path, monkeypatch):
    """$BENCH_TINY_CACHE naming a file was a FileExistsError traceback in the middle of the run's model checks."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("BENCH_TINY_CACHE", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"tiny models' cache .*file \(\$BENCH_TINY_CACHE\) can't be a folder"):
        resolve_model("tiny:qwen3-vl")
    assert (tmp_path / "file").read_text() == "x"
