"""Dataset formats: how `dataset` is read. The generic ones (a JSON/JSONL manifest; a hub or local dataset,
a parquet or CSV file) need a column mapping when their names differ from the canonical ones; the public
benchmarks' own files are read unchanged, each with its own mapping and id rule:

- `re_edit`: one JSON list of records (or `{category: [records]}`): `subset` (the category), `src_img_b64`
  (raw base64 or a data URI), `edit_instruction_en`, `original_description_en`, `rationale_short_en`; the id
  comes from `original_image_path`. Source: RE-Edit
  `src/data/benchmark_loader.py::BenchmarkLoader._extract_category_data`.
- `risebench`: `data_total.json`: `index`, `category`, `instruction`, `image`, and `reference` /
  `reference_txt` (text) or `reference_img`; optional `subtask`, `consistency_free`, `reasoning_img`,
  `reasoning_wo_ins`. Source: RISEBench `gpt_eval.py::eval_vanilla`.
- `kris`: a folder of task folders, each with `annotation.json` `{id: {ori_img, gt_img, ins_en, explain_en}}`
  and its images. Source: Kris_Bench `metrics_*.py`.
- `gedit`: the GEdit-Bench dataset: `key`, `task_type`, `instruction`, `instruction_language`, `input_image`,
  `Intersection_exist`. Source: Step1X-Edit `GEdit-Bench/test_gedit_score.py`.

`auto` (the default) recognises them by their files and fields. In every format an image column may hold a
path (relative to the data, never outside it), image bytes, or a base64 string or data URI (decoded under the
same pixel cap, checked before any pixel is decoded).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError, DataConfig


@dataclass(frozen=True)
class Format:
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> the format's column (the default)
    extras: tuple[str, ...] = ()  # the format's own fields kept on each sample (for its protocol's rules)
    renames: dict[str, str] = field(default_factory=dict)  # extra field name -> source column, when they differ


FORMATS = {
    "manifest": Format("manifest"),
    "datasets": Format("datasets"),
    "re_edit": Format("re_edit"),  # read into canonical rows by `read_re_edit`
    "risebench": Format("risebench", {"id": "index", "source_image": "image",
                                      "reference_text": "reference|reference_txt", "reference_image": "reference_img"},
                        ("subtask", "consistency_free", "reasoning_img", "reasoning_wo_ins")),
    "kris": Format("kris"),  # read into canonical rows by `read_kris`
    "gedit": Format("gedit", {"id": "key", "category": "task_type", "source_image": "input_image"},
                    ("language", "intersection"),
                    {"language": "instruction_language", "intersection": "Intersection_exist"}),
}
RE_EDIT_FIELDS = {"subset", "src_img_b64", "edit_instruction_en"}
RISEBENCH_FIELDS = {"index", "category", "instruction", "image"}
GEDIT_COLUMNS = {"key", "task_type", "instruction", "instruction_language", "input_image"}


def detect(cfg: DataConfig) -> str:
    """The format of `cfg.dataset` when `dataset_format` is auto (gedit is recognised after loading, by its
    columns)."""
    path = Path(cfg.dataset)
    if path.is_dir():
        return "kris" if any(path.glob("*/annotation.json")) else "datasets"
    if path.suffix in (".json", ".jsonl") and path.is_file():
        first = _first_record(path)
        if first is not None and RE_EDIT_FIELDS <= set(first):
            return "re_edit"
        if first is not None and RISEBENCH_FIELDS <= set(first) and not {"id", "source_image"} & set(first):
            return "risebench"
        return "manifest"
    return "datasets"


def _first_record(path: Path) -> Optional[dict]:
    """The first record of a JSON list (or of the first list in an object), or of a JSONL file, read without
    parsing the whole file when it is large (RE-Edit's file holds every image as base64)."""
    with open(path, "rb") as f:
        head = f.read(1 << 20).decode("utf-8-sig", errors="ignore")
    if path.suffix == ".jsonl":
        line = next((line for line in head.splitlines() if line.strip()), "")
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    start = head.find("{", head.find("[") if "[" in head else 0)
    decoder = json.JSONDecoder()
    while start != -1:
        try:
            value, _ = decoder.raw_decode(head, start)
            if isinstance(value, dict) and not any(isinstance(v, list) for v in value.values()):
                return value
            if isinstance(value, dict):  # {category: [records]}: the first record of the first list
                first = next((v[0] for v in value.values() if isinstance(v, list) and v), None)
                return first if isinstance(first, dict) else None
        except ValueError:
            pass
        start = head.find("{", start + 1)
    return None


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


def read_kris(root: Path) -> tuple[list[dict], str]:
    """KRIS-Bench's task folders as canonical rows (id "<task>_<key>"), and a digest of their annotations.
    Image paths are relative to the root; a task whose `ori_img` is a list (several source images) gives that
    list, which the sample refuses with a clear reason."""
    rows, digest = [], hashlib.sha256()
    for annotation in sorted(root.glob("*/annotation.json")):
        task = annotation.parent.name
        raw = annotation.read_bytes()
        digest.update(task.encode() + b"\0" + raw + b"\0")
        try:
            entries = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, RecursionError) as err:
            raise ConfigError(f"{str(annotation)!r} is not valid JSON: {err}") from None
        if not isinstance(entries, dict):
            raise ConfigError(f"{str(annotation)!r} must be an object keyed by image id.")
        for key in sorted(entries, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))):
            entry = entries[key] if isinstance(entries[key], dict) else {}
            source = entry.get("ori_img")
            gt = entry.get("gt_img")
            rows.append({"id": f"{task}_{key}", "category": task, "instruction": entry.get("ins_en"),
                         "source_image": [f"{task}/{s}" for s in source] if isinstance(source, list)
                         else (f"{task}/{source}" if isinstance(source, str) and source else None),
                         "reference_image": f"{task}/{gt}" if isinstance(gt, str) and gt else None,
                         "explanation": entry.get("explain_en") or None})
    if not rows:
        raise ConfigError(f"{str(root)!r} has no */annotation.json: not KRIS-Bench's layout.")
    return rows, "sha256:" + digest.hexdigest()
