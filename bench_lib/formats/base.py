"""A dataset format: how `dataset` is read into rows of the canonical columns (bench_lib.data maps and validates
them). Each format is one class in one module of this package, registered under its name
(bench_lib.registry.FORMATS); `dataset_format: auto` asks each in `priority` order whether it `detect`s the data
and reads it with the first that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, DataConfig
from ..data import ManifestTable, read_json_file

JSON_SUFFIXES = (".json", ".jsonl")


class Format:
    name: ClassVar[str] = ""  # set when it is registered
    description: ClassVar[str] = ""  # one line for `--help` and the README
    priority: ClassVar[int] = 50  # `auto` asks the formats in this order (lowest first)
    columns: ClassVar[dict[str, str]] = {}  # canonical name -> the format's column ("a|b": the first non-empty)
    extras: ClassVar[tuple[str, ...]] = ()  # the format's own fields kept on each sample (for its protocol's rules)
    renames: ClassVar[dict[str, str]] = {}  # extra field name -> source column, when they differ
    protocol: ClassVar[str] = "default"  # the protocol `protocol: auto` scores this format's data with

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        """Whether `cfg.dataset` is in this format, judged cheaply (file names, the first record's keys: nothing
        is read whole). Asked only with `dataset_format: auto`."""
        return False

    @classmethod
    def recognise(cls, read_by: type[Format], table: Any) -> bool:
        """With `dataset_format: auto`, after format `read_by` read the data: whether its rows are really this
        format's (GEdit-Bench's dataset is a dataset with its own columns)."""
        return False

    @classmethod
    def read(cls, cfg: DataConfig) -> Any:
        """The rows (a bench_lib.data table: `columns`, `text_column`, `image_ref`, `identity`). Data that is not
        in this format (a named format that does not fit) is a `ConfigError`, one line."""
        raise NotImplementedError


def local_path(cfg: DataConfig) -> Path:
    return Path(cfg.dataset).expanduser()


def json_file(cfg: DataConfig, name: str) -> Path:
    """The JSON or JSONL file format `name` reads, or a ConfigError."""
    path = local_path(cfg)
    if not path.is_file() or path.suffix not in JSON_SUFFIXES:
        raise ConfigError(f"dataset {cfg.dataset!r}: format {name} needs a .json or .jsonl file.")
    return path


def is_json_file(cfg: DataConfig) -> bool:
    path = Path(cfg.dataset)
    return path.suffix in JSON_SUFFIXES and path.is_file()


class JsonRecords(Format):
    """A JSON list of objects or a JSONL file, one row per object (image paths relative to the file)."""

    @classmethod
    def read(cls, cfg: DataConfig) -> ManifestTable:
        return ManifestTable.from_file(json_file(cfg, cls.name))


__all__ = ["Format", "JsonRecords", "is_json_file", "json_file", "local_path", "read_json_file"]
