"""`kris`: KRIS-Bench's folder of task folders, each with `annotation.json`
`{id: {ori_img, gt_img, ins_en, explain_en}}` and its images. Source: Kris_Bench `metrics_*.py`.

`ori_img` is a list in the multi-element composition and temporal prediction tasks: the sample has several
source images, in that order. For temporal prediction the frame numbers come from the file names as
`metrics_temporal_prediction.py` reads them (`<sequence>-<frame>.<ext>`): the frame to predict is the one of 1-4
the sources lack, else the one after the last (kept as the fields `frames` and `target_frame`)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..config import ConfigError, DataConfig
from ..data import ManifestTable
from .base import Format, local_path


class KRIS(Format):
    description = "KRIS-Bench's folder of task folders with an annotation.json each, read unchanged"
    priority = 10
    protocol = "kris"
    extras = ("frames", "target_frame")

    @classmethod
    def detect(cls, cfg: DataConfig) -> bool:
        path = Path(cfg.dataset)
        return path.is_dir() and any(path.glob("*/annotation.json"))

    @classmethod
    def read(cls, cfg: DataConfig) -> ManifestTable:
        path = local_path(cfg)
        if not path.is_dir():
            raise ConfigError(f"dataset {cfg.dataset!r}: format kris needs KRIS-Bench's folder of task folders.")
        rows, identity = read_kris(path)
        return ManifestTable(rows, base=path, identity=identity, name=str(path))


def read_kris(root: Path) -> tuple[list[dict], str]:
    """KRIS-Bench's task folders as canonical rows (id "<task>_<key>"), and a digest of their annotations.
    Image paths are relative to the root; a task whose `ori_img` is a list (several source images) gives that
    list (bench_lib.data reads it as the sample's sources, in order)."""
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
                         "explanation": entry.get("explain_en") or None,
                         **(temporal_frames(source) if isinstance(source, list) and task == TEMPORAL else {})})
    if not rows:
        raise ConfigError(f"{str(root)!r} has no */annotation.json: not KRIS-Bench's layout.")
    return rows, "sha256:" + digest.hexdigest()


TEMPORAL = "temporal_prediction"


def temporal_frames(names: list) -> dict[str, str]:
    """KRIS-Bench's frame numbers of a temporal-prediction sample (metrics_temporal_prediction.py): each source's
    from its file name (`(\\d+)-(\\d+)`, the second number); the predicted frame is the only one of 1-4 they
    lack, else the one after the largest. Names without a frame number: the sources' positions 1..n (the
    reference script cannot order such a sample at all)."""
    found = [re.search(r"(\d+)-(\d+)", str(name)) for name in names]
    frames = [int(m.group(2)) for m in found] if all(found) else list(range(1, len(names) + 1))
    missing = {1, 2, 3, 4} - set(frames)
    target = next(iter(missing)) if len(missing) == 1 else (max(frames) + 1 if frames else 1)
    return {"frames": ",".join(str(f) for f in frames), "target_frame": str(target)}
