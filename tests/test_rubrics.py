"""Rubric files (bench_lib.judges.rubrics): one prompt per category, matched by name."""

import pytest
from conftest import IDENTITY_RUN

from bench_lib import config_from_dict
from bench_lib.config import ConfigError
from bench_lib.judges import Rubrics


def test_rubric_files_match_categories_case_insensitively(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "Default.txt").write_text("default {instruction}")
    (prompts / "Physics.txt").write_text("physics {instruction}")
    rubrics = Rubrics(prompts)
    assert rubrics.rubric_name("physics") == "physics" and rubrics.rubric_name("PHYSICS") == "physics"
    assert rubrics.rubric_name("social") == "default"
    config_from_dict({**IDENTITY_RUN, "dataset": "x.jsonl", "prompts_dir": str(prompts)})  # Default.txt counts
    (prompts / "physics.txt").write_text("another")
    with pytest.raises(ConfigError, match="differ only by case"):
        Rubrics(prompts)
