"""`datasets`: what the `datasets` library reads: a hub dataset, a local dataset folder (saved with `save_to_disk`,
or files it recognises), a single .parquet or .csv file. Names other than the canonical columns are mapped with
`columns`."""

from __future__ import annotations

from typing import ClassVar, Optional

from ..config import ConfigError, DataConfig
from ..data import DatasetTable, not_regular
from .base import Format, local_path


class Datasets(Format):
    description = "hub or local dataset, parquet or CSV"
    priority = 90  # whatever no other format recognises
    reads: ClassVar[str] = "a hub id, a local dataset folder, or a .parquet/.csv file"  # when a file does not fit

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        return True

    @classmethod
    def read(cls, cfg: DataConfig) -> DatasetTable:
        import datasets

        path = local_path(cfg)
        if path.is_dir():
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict):
                    if cfg.dataset_split not in loaded:
                        raise ConfigError(f"split {cfg.dataset_split!r} not in {cfg.dataset!r}; splits: "
                                          f"{list(loaded)}.")
                    loaded = loaded[cfg.dataset_split]
                return DatasetTable(loaded, base=path.resolve())
            return DatasetTable(_load_dataset(cfg, str(path)), base=path.resolve())
        if path.exists() and not path.is_file():
            raise ConfigError(f"dataset {cfg.dataset!r} is {not_regular(path)}, not a file or folder.")
        if path.is_file():
            builder = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix.lower())
            if builder is None and cfg.dataset_format != "auto":  # a named format that does not read such files
                hint = ": read it with dataset_format manifest (or auto)" if path.suffix in (".json", ".jsonl") else ""
                raise ConfigError(f"dataset {cfg.dataset!r}: format {cls.name} reads {cls.reads}, not a "
                                  f"{path.suffix or 'suffix-less'} file{hint}.")
            if builder is None:
                raise ConfigError(f"dataset {cfg.dataset!r} is a file but not a .json/.jsonl manifest, .parquet or "
                                  ".csv.")
            return DatasetTable(_load_dataset(cfg, builder, data_files=str(path), split="train"),
                                base=path.parent.resolve())
        return DatasetTable(_load_dataset(cfg, cfg.dataset, revision=cfg.dataset_revision), base=None)


def _load_dataset(cfg: DataConfig, path: str, revision: Optional[str] = None, **kwargs):
    import datasets

    kwargs.setdefault("split", cfg.dataset_split)
    try:
        return datasets.load_dataset(path, revision=revision, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        # datasets raises these for an unknown hub id, an unknown split and an unreadable folder
        raise ConfigError(f"cannot load dataset {path!r} (split {cfg.dataset_split!r}): {err}") from None
