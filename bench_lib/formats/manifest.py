"""`manifest`: a JSON list of objects or a JSONL file, one sample per object; names other than the canonical
columns are mapped with `columns`."""

from __future__ import annotations

from ..config import DataConfig
from .base import JsonRecords, is_json_file


class Manifest(JsonRecords):
    description = "JSON/JSONL of objects, image paths relative to the file"
    priority = 40  # after the benchmarks' own JSON formats, which are manifests with known fields

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        return is_json_file(cfg)
