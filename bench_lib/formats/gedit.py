"""`gedit`: the GEdit-Bench dataset (hub `stepfun-ai/GEdit-Bench`, or its parquet): `key`, `task_type`,
`instruction`, `instruction_language`, `input_image`, `Intersection_exist`. Source: Step1X-Edit
`GEdit-Bench/test_gedit_score.py`. `auto` recognises it by its columns, once the dataset is read."""

from __future__ import annotations

from typing import Any

from .base import Format
from .dataset import Datasets

COLUMNS = {"key", "task_type", "instruction", "instruction_language", "input_image"}


class GEdit(Datasets):
    description = "the GEdit-Bench dataset, from the hub or its parquet, read unchanged"
    priority = 80
    protocol = "viescore"
    reads = ("GEdit-Bench's dataset (a hub id, a local dataset folder, or a .parquet/.csv file with columns "
             "key, task_type, instruction, instruction_language, input_image)")
    columns = {"id": "key", "category": "task_type", "source_image": "input_image"}
    extras = ("language", "intersection")
    renames = {"language": "instruction_language", "intersection": "Intersection_exist"}

    @classmethod
    def detect(cls, cfg) -> bool:
        return False  # a dataset like any other until it is read

    @classmethod
    def recognise(cls, read_by: type[Format], table: Any) -> bool:
        return read_by.name == "datasets" and COLUMNS <= set(table.columns)
