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


@pytest.mark.parametrize("make", ["fifo", "folder"])
def test_a_rubric_that_is_not_a_regular_file_is_one_line_not_a_hang(tmp_path, make):
    """A FIFO named `physics.txt` would block the read forever (on every rank); a folder so named was a traceback."""
    import os
    import threading

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "default.txt").write_text("default {instruction}")
    os.mkfifo(prompts / "physics.txt") if make == "fifo" else (prompts / "physics.txt").mkdir()
    outcome = []

    def read():
        try:
            Rubrics(prompts)
        except Exception as err:  # the outcome is asserted below
            outcome.append(err)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # let the blocked read finish, then fail
        with open(prompts / "physics.txt", "w"):
            pass
        pytest.fail("reading the rubrics waited on the FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError), outcome
    assert "physics.txt" in str(outcome[0]) and "not a regular file" in str(outcome[0])
