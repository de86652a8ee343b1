"""Checks made before any model loads (bench_lib.preflight)."""

import pytest
from conftest import IDENTITY_RUN
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import ConfigError
from bench_lib.preflight import check_output_dir


def test_output_dir_inside_a_local_dataset_folder_is_refused(tmp_path):
    import datasets

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    ds = datasets.Dataset.from_list([{"id": "a", "category": "physics", "instruction": "melt it",
                                      "source_image": str(tmp_path / "a.png")}]).cast_column("source_image",
                                                                                              datasets.Image())
    ds.save_to_disk(str(tmp_path / "data"))
    cfg = config_from_dict({**IDENTITY_RUN, "dataset": str(tmp_path / "data"),
                            "output_dir": str(tmp_path / "data" / "runs" / "one")})
    with pytest.raises(ConfigError, match="inside the dataset folder"):
        runner.run(cfg)
    assert not (tmp_path / "data" / "runs").exists()
    # a manifest is identified by its content: its folder may hold the outputs
    check_output_dir(config_from_dict({**IDENTITY_RUN, "dataset": "data/demo/manifest.jsonl",
                                              "output_dir": "data/demo/out"}))


def test_a_data_file_among_the_run_s_own_files_is_refused_before_anything_is_deleted(tmp_path):
    """A manifest the user named results.jsonl in the folder then given as output_dir: --overwrite deleted it (the
    run had read it already) and the run's results took its name. The data, file or folder, may not be among the
    files the run writes (nor its sweep's); elsewhere in output_dir it stays allowed."""
    import json

    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(out / "images" / "a.png")
    text = json.dumps({"id": "a", "category": "physics", "instruction": "melt it", "source_image": "images/a.png"})
    for name in ("results.jsonl", "mine.jsonl"):
        (out / name).write_text(text + "\n")
    run = {**IDENTITY_RUN, "dataset": str(out / "results.jsonl"), "output_dir": str(out), "overwrite": True}
    with pytest.raises(ConfigError, match=r"`dataset` .*results.jsonl' is inside `output_dir` .*among the files"):
        runner.run(config_from_dict(run))
    assert (out / "results.jsonl").read_text() == text + "\n" and not (out / "run.json").exists()
    check_output_dir(config_from_dict({**run, "dataset": str(out / "mine.jsonl")}))  # not one of the run's files
    with pytest.raises(ConfigError, match="among the files"):  # a sweep's variant folder is the run's too
        check_output_dir(config_from_dict({**run, "output_dir": str(tmp_path), "sweep": [{"name": "out"}]}))
    (out / "edits").mkdir()
    (out / "edits" / "adapter.safetensors").write_bytes(b"weights")  # any path option: an adapter deleted too
    with pytest.raises(ConfigError, match=r"`lora` .*adapter.safetensors' is inside `output_dir`"):
        check_output_dir(config_from_dict({**run, "dataset": str(out / "mine.jsonl"), "editor": "diffusers",
                                           "editor_model": "tiny:flux-kontext",
                                           "lora": str(out / "edits" / "adapter.safetensors")}))


def test_a_logs_link_in_the_output_folder_is_refused_when_trackers_would_write_through_it(tmp_path):
    """`<output_dir>/logs` is the trackers' default folder; a link there had tensorboard write its files through
    it, out of output_dir (a shared runs folder)."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "logs").symlink_to(elsewhere, target_is_directory=True)
    run = {**IDENTITY_RUN, "dataset": "data/demo/manifest.jsonl", "output_dir": str(out)}
    with pytest.raises(ConfigError, match="logs is a symbolic link"):
        check_output_dir(config_from_dict({**run, "log_with": "tensorboard"}))
    check_output_dir(config_from_dict(run))  # no trackers: nothing is written there
    check_output_dir(config_from_dict({**run, "log_with": "tensorboard", "logging_dir": str(elsewhere)}))  # named
    assert list(elsewhere.iterdir()) == []


def test_images_the_data_names_inside_the_run_s_own_files_are_refused_before_anything_is_deleted(tmp_path):
    """Re-judging a run in place from a manifest that names its own edits (the `edited_image` column, as
    results.jsonl gives them): --overwrite deleted edits/ before the pre-computed editor read them, so every edit
    failed and the files were gone. Any image the data names among the run's own files is refused first; a file
    elsewhere in output_dir is not the run's and stays allowed."""
    import json

    out = tmp_path / "out"
    (out / "edits").mkdir(parents=True)
    (out / "mine").mkdir()
    for name in ("edits/a.png", "mine/src.png"):
        Image.new("RGB", (16, 16), "red").save(out / name)
    (out / "run.json").write_text("{}")  # a folder that looks used: nothing in it may go before the refusal
    manifest = tmp_path / "m.jsonl"

    def write(**images):
        manifest.write_text(json.dumps({"id": "a", "category": "physics", "instruction": "melt it", **images}) + "\n")

    run = {**IDENTITY_RUN, "dataset": str(manifest), "output_dir": str(out), "editor": "precomputed",
           "columns": {"edited_image": "edited_image"}, "overwrite": True}
    write(source_image="out/mine/src.png", edited_image="out/edits/a.png")  # beside the run folder, as a manifest's
    with pytest.raises(ConfigError, match=r"sample 'a': the image .*edits/a.png' is inside `output_dir`"):
        runner.run(config_from_dict(run))
    write(source_image="out/edits/a.png")  # a source among the run's edits: the same
    with pytest.raises(ConfigError, match="among the files the run writes"):
        runner.run(config_from_dict({**run, "editor": "identity", "columns": {}}))
    assert (out / "edits" / "a.png").is_file() and (out / "run.json").is_file()
    from bench_lib.data import load_samples
    from bench_lib.preflight import check_inputs_outside_outputs

    write(source_image="out/mine/src.png")  # elsewhere in output_dir: not the run's files
    cfg = config_from_dict({**run, "editor": "identity", "columns": {}})
    check_inputs_outside_outputs(cfg, load_samples(cfg.data))
    sweep = tmp_path / "sweep"  # a sweep's own chart: its --overwrite deletes it, and the sweep writes it anew
    sweep.mkdir()
    Image.new("RGB", (16, 16), "red").save(sweep / "sweep_chart.png")
    write(source_image="sweep/sweep_chart.png")
    check_inputs_outside_outputs(config_from_dict({**run, "output_dir": str(sweep)}), load_samples(cfg.data))
    with pytest.raises(ConfigError, match=r"sample 'a': the image .*sweep_chart.png' is inside `output_dir`"):
        runner.run(config_from_dict({**run, "editor": "identity", "columns": {}, "output_dir": str(sweep),
                                     "sweep": [{"name": "x"}]}))
    assert (sweep / "sweep_chart.png").is_file()
