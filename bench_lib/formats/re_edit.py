"""`re_edit`: RE-Edit's JSON, one list of records (or `{category: [records]}`): `subset` (the category),
`src_img_b64` (raw base64 or a data URI), `edit_instruction_en`, `original_description_en`, `rationale_short_en`;
the id comes from `original_image_path`. Source: RE-Edit
`src/data/benchmark_loader.py::BenchmarkLoader._extract_category_data`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..config import ConfigError, DataConfig
from ..data import ManifestTable, read_json_file
from .base import Format, is_json_file, json_file
from .jsonstream import first_record_keys

FIELDS = {"subset", "src_img_b64", "edit_instruction_en"}


class REEdit(Format):
    description = "RE-Edit's JSON, a list of records or {category: [records]}, read unchanged"
    priority = 20
    protocol = "re_edit"

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        if not is_json_file(cfg):
            return False
        keys = first_record_keys(Path(cfg.dataset))
        return keys is not None and FIELDS <= keys

    @classmethod
    def read(cls, cfg: DataConfig) -> ManifestTable:
        path = json_file(cfg, cls.name)
        raw, data = read_json_file(path)
        return ManifestTable(read_re_edit(path, raw, data), base=path.parent, name=str(path),
                             identity="sha256:" + hashlib.sha256(raw).hexdigest())


def re_edit_id(record: dict, category: str, index: int) -> Any:
    """RE-Edit's sample id (benchmark_loader.py `_extract_category_data`): `original_image_path` (else
    "<category>_<index>"); when it contains "/", the part after the last "/" with every ".png" and then every
    ".jpg" removed; without "/", the value as it is."""
    pair_id = record.get("original_image_path", f"{category}_{index}")
    if pair_id and isinstance(pair_id, str) and "/" in pair_id:
        pair_id = pair_id.split("/")[-1].replace(".png", "").replace(".jpg", "")
    return pair_id


def read_re_edit(path: Path, raw: bytes, data: Any) -> list[dict]:
    """RE-Edit's records as canonical rows. A list: every record, its `subset` the category. An object of
    lists: each list's records (RE-Edit reads them under their key and keeps those whose subset matches it;
    here a record's own `subset` is its category either way, so none is dropped)."""
    if isinstance(data, list):
        records = [(r.get("subset") if isinstance(r, dict) else None, i, r) for i, r in enumerate(data)]
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        records = [(r.get("subset", key) if isinstance(r, dict) else key, i, r)
                   for key, values in data.items() for i, r in enumerate(values)]
    else:
        raise ConfigError(f"{str(path)!r} is not RE-Edit's format: a JSON list of records, or an object of lists.")
    rows = []
    for category, index, record in records:
        if not isinstance(record, dict):
            raise ConfigError(f"{str(path)!r}: record {index} of {category!r} is not an object.")
        rows.append({"id": re_edit_id(record, category or "", index), "category": category,
                     "instruction": record.get("edit_instruction_en"), "source_image": record.get("src_img_b64"),
                     "description": record.get("original_description_en"),
                     "rationale": record.get("rationale_short_en")})
    return rows


