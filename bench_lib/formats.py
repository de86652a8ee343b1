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

import codecs
import hashlib
import json
import re
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
        keys = first_record_keys(path)
        if keys is not None and RE_EDIT_FIELDS <= keys:
            return "re_edit"
        if keys is not None and RISEBENCH_FIELDS <= keys and not {"id", "source_image"} & keys:
            return "risebench"
        return "manifest"
    return "datasets"


def first_record_keys(path: Path) -> Optional[set[str]]:
    """The keys of the first record of a JSON list (or of the first non-empty list of an object), or of a JSONL
    file; None when there is none or the file is not JSON. The file is streamed: a record of any size is read
    through (RE-Edit's records hold an image each as base64) while only the keys are kept, and nothing after
    the first record is read."""
    try:
        with open(path, "rb") as f:
            stream = _JsonStream(f)
            first = stream.peek()
            if first == "{" and path.suffix == ".jsonl":
                return stream.keys()
            if first == "[" and path.suffix == ".json":
                stream.pos += 1
                return stream.keys() if stream.peek() == "{" else None
            if first == "{" and path.suffix == ".json":  # {category: [records]}
                stream.pos += 1
                while stream.peek() == '"':
                    stream.string(keep=False)
                    stream.expect(":")
                    if stream.peek() == "[":
                        stream.pos += 1
                        if stream.peek() == "{":
                            return stream.keys()
                        if stream.peek() != "]":
                            return None
                        stream.pos += 1
                    else:
                        stream.skip()
                    if not stream.take(","):
                        return None
            return None
    except ValueError:  # not JSON (the manifest reader says where)
        return None


_STRING_STOP = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,\]}\s]")


class _JsonStream:
    """A JSON text read a chunk at a time, with what has been consumed dropped: enough of a parser to walk over
    values of any size (long strings are skipped with a regular-expression search, not character by character)."""

    def __init__(self, f, chunk: int = 1 << 20):
        self.f, self.chunk = f, chunk
        self.text, self.pos = "", 0
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")

    def fill(self) -> bool:
        """Read the next chunk (False at the end of the file)."""
        data = self.f.read(self.chunk)
        self.text = self.text[self.pos:] + self.decoder.decode(data, final=not data)
        self.pos = 0
        return bool(data)

    def peek(self) -> str:
        """The next character that is not white space ("" at the end), not consumed."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def take(self, char: str) -> bool:
        if self.peek() != char:
            return False
        self.pos += 1
        return True

    def expect(self, char: str) -> None:
        if not self.take(char):
            raise ValueError(f"expected {char!r}")

    def string(self, *, keep: bool) -> Optional[str]:
        """The string that starts here (its text when `keep`, else it is only skipped)."""
        self.expect('"')
        raw = []
        while True:
            stop = _STRING_STOP.search(self.text, self.pos)
            if stop is None or (stop.group() == "\\" and stop.end() >= len(self.text)):
                end = stop.start() if stop else len(self.text)  # an escape cut by the chunk waits for the next
                if keep:
                    raw.append(self.text[self.pos:end])
                self.pos = end
                if not self.fill():
                    raise ValueError("unterminated string")
                continue
            end = stop.end() + (stop.group() == "\\")  # a backslash and the character it escapes
            if keep:
                raw.append(self.text[self.pos:end])
            self.pos = end
            if stop.group() == '"':
                return json.loads('"' + "".join(raw)) if keep else None

    def skip(self) -> None:
        """Walk over the value that starts here."""
        char = self.peek()
        if char == '"':
            self.string(keep=False)
        elif char in ("{", "["):
            depth = 0
            while True:
                char = self.peek()
                if char == "":
                    raise ValueError("unterminated value")
                if char == '"':
                    self.string(keep=False)
                    continue
                self.pos += 1
                depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(char, 0)
                if depth == 0:
                    return
        elif char:
            while (end := _SCALAR_END.search(self.text, self.pos)) is None:
                self.pos = len(self.text)
                if not self.fill():
                    return
            self.pos = end.start()
        else:
            raise ValueError("no value")

    def keys(self) -> set[str]:
        """The keys of the object that starts here (its values are skipped)."""
        self.expect("{")
        keys: set[str] = set()
        if self.take("}"):
            return keys
        while True:
            keys.add(self.string(keep=True))
            self.expect(":")
            self.skip()
            if self.take("}"):
                return keys
            self.expect(",")


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
        if not annotation.is_file():  # a FIFO would wait forever for a writer
            raise ConfigError(f"{str(annotation)!r} is not a regular file.")
        raw = annotation.read_bytes()
        digest.update(task.encode() + b"\0" + raw + b"\0")
        try:
            entries = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, RecursionError) as err:
            raise ConfigError(f"{str(annotation)!r} is not valid JSON: {err}") from None
        if not isinstance(entries, dict):
            raise ConfigError(f"{str(annotation)!r} must be an object keyed by image id.")
        odd = [key for key in entries if any(c.isdigit() and c not in "0123456789" for c in key)]
        if odd:
            raise ConfigError(f"{str(annotation)!r}: key {odd[0]!r} is a number written with other than the digits "
                              "0-9 (KRIS-Bench numbers its samples 1, 2, ...): rename it.")
        for key in sorted(entries, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)):
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
