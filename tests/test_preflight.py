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
