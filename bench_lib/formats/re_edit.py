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
# The subsets RE-Edit reads (its config's `data.categories`, config/config_iterative_refinement.yaml), compared
# exactly (benchmark_loader.py `_extract_category_data`: `item.get("subset", "") != category`).
CATEGORIES = ("physical", "environmental", "cultural", "causal", "referential")
LOADER = "RE-Edit's loader (src/data/benchmark_loader.py) "


class REEdit(Format):
    description = "RE-Edit's JSON, a list of records or {category: [records]}, read unchanged"
    priority = 20
    protocol = "re_edit"
    extras = ("left_out_by_reference",)

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


def left_out(record: dict, key: Any) -> Any:
    """Why RE-Edit's loader does not read `record` (filed under `key` in an object of lists; None in a list), or
    None when it does. It reads, for each of its five categories, the records whose `subset` is exactly that
    name: in a list, any record; in an object, the records of the list under that very key."""
    subset = record.get("subset", "")
    if key is not None and key not in CATEGORIES:
        return f"{LOADER}reads only the lists under the keys {', '.join(CATEGORIES)}; this record is under {key!r}"
    if key is not None and subset != key:
        return f"{LOADER}reads a list's records whose subset is its key; this record is under {key!r} with " \
               f"subset {subset!r}"
    if subset not in CATEGORIES:
        return f"{LOADER}reads the subsets {', '.join(CATEGORIES)}, compared exactly; this record's is {subset!r}"
    return None


def read_re_edit(path: Path, raw: bytes, data: Any) -> list[dict]:
    """RE-Edit's records as canonical rows. A list: every record, its `subset` the category. An object of
    lists: each list's records, a record's own `subset` its category (its key when it has none). Every record is
    read; one that RE-Edit's own loader would not read carries why in `left_out_by_reference`, and
    `failure_policy: reference` leaves it out of the scores (a row `invalid_input` that says so)."""
    if isinstance(data, list):
        records = [(r.get("subset") if isinstance(r, dict) else None, None, i, r) for i, r in enumerate(data)]
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        records = [(r.get("subset", key) if isinstance(r, dict) else key, key, i, r)
                   for key, values in data.items() for i, r in enumerate(values)]
    else:
        raise ConfigError(f"{str(path)!r} is not RE-Edit's format: a JSON list of records, or an object of lists.")
    rows = []
    for category, key, index, record in records:
        if not isinstance(record, dict):
            raise ConfigError(f"{str(path)!r}: record {index} of {category!r} is not an object.")
        why = left_out(record, key)
        rows.append({"id": re_edit_id(record, category or "", index), "category": category,
                     "instruction": record.get("edit_instruction_en"), "source_image": record.get("src_img_b64"),
                     "description": record.get("original_description_en"),
                     "rationale": record.get("rationale_short_en"), **({"left_out_by_reference": why} if why else {})})
    return rows


