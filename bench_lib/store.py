"""The output folder: file-safe names, atomic writes, results rows.

```
<output_dir>/edits/<file-safe id>.png
<output_dir>/results.jsonl     one row per sample, in dataset order
<output_dir>/report.json
<output_dir>/report.md
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from PIL import Image

STATUSES = ("ok", "invalid_input", "edit_failed", "judge_failed")
EDITS_DIR = "edits"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_KEEP = re.compile(r"[a-z0-9._-]+")
_MAX_STEM = 96


def sample_seed(seed: int, sample_id: str) -> int:
    """The generator seed of one sample: a function of (seed, id) only, never of rank or batch position."""
    digest = hashlib.sha256(f"{seed}\x00{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def safe_stem(sample_id: str) -> str:
    """A file name stem for a sample id, safe on every filesystem and unique per id.

    Ids made only of [a-z0-9._-] that fit are kept as they are (``causal_reasoning_3``). Any other id is
    sanitised and gets a short hash of the original, so two ids never share a file, not even on a
    case-insensitive filesystem ("Cup" and "cup"). The name depends on the id alone, never on the rest
    of the dataset, so it is the same in every run.
    """
    if _KEEP.fullmatch(sample_id) and not sample_id.startswith(".") and len(sample_id) <= _MAX_STEM:
        return sample_id
    cleaned = _UNSAFE.sub("_", sample_id).strip("._").lower()
    digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned[:_MAX_STEM] or 'sample'}-{digest}"


def edit_path(sample_id: str) -> str:
    """Path of a sample's edited image, relative to the output folder."""
    return f"{EDITS_DIR}/{safe_stem(sample_id)}.png"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(image: Image.Image, path: Path) -> None:
    _atomic_write(path, lambda f: image.convert("RGB").save(f, format="PNG"))


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def result_row(*, sample, status: str, seed: int, score: Optional[float] = None,
               edited_image: Optional[str] = None, error: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    """One `results.jsonl` row. The first keys are the output contract; `extra` may add more."""
    assert status in STATUSES, status
    assert (score is not None) == (status == "ok"), (status, score)
    return {
        "id": sample.id,
        "category": sample.category,
        "instruction": sample.instruction,
        "status": status,
        "score": score,
        "edited_image": edited_image,
        "error": error,
        "seed": seed,
        **extra,
    }
