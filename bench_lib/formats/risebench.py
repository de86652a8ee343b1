"""`risebench`: RISEBench's `data_total.json`: `index`, `category`, `instruction`, `image`, and `reference` /
`reference_txt` (text) or `reference_img`; optional `subtask`, `consistency_free`, `reasoning_img`,
`reasoning_wo_ins`. Source: RISEBench `gpt_eval.py::eval_vanilla`."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .base import JsonRecords, is_json_file
from .jsonstream import first_record_keys

FIELDS = {"index", "category", "instruction", "image"}


class RISEBench(JsonRecords):
    description = "RISEBench's data_total.json, read unchanged"
    priority = 30
    protocol = "risebench"
    columns = {"id": "index", "source_image": "image", "reference_text": "reference|reference_txt",
               "reference_image": "reference_img"}
    extras = ("subtask", "consistency_free", "reasoning_img", "reasoning_wo_ins")

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        if not is_json_file(cfg):
            return False
        keys = first_record_keys(Path(cfg.dataset))
        return keys is not None and FIELDS <= keys and not {"id", "source_image"} & keys
