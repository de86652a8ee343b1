"""Samples: load a dataset (hub id, local folder, a single parquet/CSV file, a JSON/JSONL manifest, or a
benchmark's own files: each a registered format, see bench_lib.formats), map its columns, validate.

Only the small text fields are read up front. Images stay where they are (a file path, encoded bytes,
or a row of a `datasets.Dataset`) and are decoded by `ImageRef.load()` on the rank that edits or judges
the sample, so rank 0 never holds the whole benchmark's pixels.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageOps

from .config import CANONICAL_COLUMNS, DEFAULT_MAX_IMAGE_PIXELS, ConfigError, DataConfig
from .registry import FORMATS

REQUIRED_COLUMNS = ("id", "category", "instruction", "source_image")
IMAGE_COLUMNS = ("source_image", "reference_image", "edited_image")
INPUT_IMAGES = ("source_image", "reference_image")  # a problem with one makes the sample invalid_input
TEXT_COLUMNS = tuple(c for c in CANONICAL_COLUMNS if c not in IMAGE_COLUMNS)
FIELD_COLUMNS = ("description", "rationale", "explanation")  # extra text some protocols show the judge


MIN_IMAGE_SIDE = 8  # smaller images are invalid_input: nothing meaningful to edit or judge
# Formats PIL may open; others (EPS runs Ghostscript, for one) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def image_digest(image: Image.Image) -> dict[str, Any]:
    """An image as the logs record it (the judge's inputs, an edit's sources): sha256 of its mode, size and
    pixels, and its size."""
    h = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\0".encode())
    h.update(image.tobytes())
    return {"image_sha256": h.hexdigest(), "size": [image.width, image.height]}


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied; any transparency is composited on white (not black)."""
    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_grey_to_8bit(image, np.asarray(image, dtype=np.float64)), mode="L")
    return image.convert("RGB")


def _grey_to_8bit(image: Image.Image, values: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grey scaled by its real range (PIL's convert would clip to 0..255, so a
    float image of 0.8 would become black). Integers are 16-bit (0..65535); floats are 0..1. Anything else
    is refused rather than guessed."""
    if not np.isfinite(values).all():
        raise ValueError(f"{image.mode} image has NaN or infinite pixels")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float image with values in [{low:g}, {high:g}]: only 0..1 float images are read")
        values = values * 255.0
    else:
        if low < 0 or high > 65535:
            raise ValueError(f"{image.mode} image with values in [{low:g}, {high:g}]: only 0..65535 is read")
        values = values / 257.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def decode(image: Image.Image, *, max_pixels: int) -> Image.Image:
    """Check the size from the header, then decode: a decompression bomb is never decoded."""
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"image is {width}x{height} = {width * height} pixels, over max_image_pixels ({max_pixels})")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"image is {width}x{height}, smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    image.load()
    return to_rgb(image)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def not_regular(path: Path) -> Optional[str]:
    """Why `path` can't be read as a file ("not found", "a FIFO (named pipe)", ...), or None for a regular file (or
    a link to one). Reading a FIFO would wait forever for a writer, a device would never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: Path):
    """`open(path, "rb")` for a regular file only; anything else raises `ValueError` saying what it is, at once
    (the file is opened non-blocking, so a FIFO swapped in after a check can't hang the process either)."""
    problem = not_regular(path)
    if problem == "not found":
        raise FileNotFoundError(f"no such file: {path}")
    if problem is not None:
        raise ValueError(f"{path} is {problem}, not an image file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is {_kind(mode)}, not an image file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (see `open_regular`)."""
    with open_regular(path) as f:
        return f.read()


@dataclass(frozen=True)
class ImageRef:
    """Where one image lives; `load()` decodes it. One of `path`, `data`, `row` or `problem` is set."""

    path: Optional[Path] = None
    data: Optional[bytes] = None
    encoded: Optional[str] = None  # base64 text (a data URI's payload), decoded when the image is needed
    dataset: Any = None  # a one-column datasets.Dataset, used with `row`
    row: Optional[int] = None
    problem: Optional[str] = None  # the row's value can't be an image (the sample is invalid_input)
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    roots: tuple[Path, ...] = ()  # with `row`: folders a path-only image value may point into

    def load(self) -> Image.Image:
        """The image as RGB, its size checked from the header (against `max_pixels`) before any decoding."""
        with self._open() as image:
            return decode(image, max_pixels=self.max_pixels)

    def read_bytes(self) -> bytes:
        """The encoded image, undecoded (for a digest, or to decode under the pixel cap)."""
        if self.problem is not None:
            raise ValueError(self.problem)
        if self.path is None and self.data is None and self.encoded is None:
            return self._resolved().read_bytes()
        if self.encoded is not None:
            return base64.b64decode(self.encoded, validate=False)
        return self.data if self.data is not None else read_regular(self.path)

    def size(self) -> tuple[int, int]:
        """(width, height) from the image's header, without decoding its pixels."""
        with self._open() as image:
            return image.size

    @contextmanager
    def _open(self) -> Iterator[Image.Image]:
        if self.problem is not None:
            raise ValueError(self.problem)
        if self.path is None and self.data is None and self.encoded is None:
            with self._resolved()._open() as image:
                yield image
        elif self.path is not None:
            with open_regular(self.path) as f, Image.open(f, formats=IMAGE_FORMATS) as image:
                yield image
        else:
            with Image.open(io.BytesIO(self.read_bytes()), formats=IMAGE_FORMATS) as image:
                yield image

    def _resolved(self) -> ImageRef:
        """An undecoded datasets.Image value {"bytes": ..., "path": ...} as a bytes or path reference."""
        value = self.dataset[self.row][self.dataset.column_names[0]]
        if isinstance(value, dict) and value.get("bytes"):
            return ImageRef(data=value["bytes"], max_pixels=self.max_pixels)
        # Image files of an imagefolder: only inside the dataset's folder or datasets' download cache.
        path = Path(value["path"]) if isinstance(value, dict) and value.get("path") else None
        if path is None or not any(path.resolve().is_relative_to(root) for root in self.roots):
            raise ValueError(f"the dataset's image has no bytes and its path is not inside the dataset: {path}")
        return ImageRef(path=path, max_pixels=self.max_pixels)

    def describe(self) -> str:
        if self.problem is not None:
            return f"<{self.problem}>"
        if self.path is not None:
            return str(self.path)
        if self.encoded is not None:
            return "<base64 image>"
        return "<bytes>" if self.data is not None else f"<dataset row {self.row}>"


@dataclass(frozen=True)
class Sample:
    index: int  # position in dataset order; results are written in this order
    id: str
    category: str
    instruction: str
    source_image: Optional[ImageRef]
    reference_text: Optional[str] = None
    reference_image: Optional[ImageRef] = None
    human_score: Optional[float] = None  # a person's rating of a correct edit, for meta-evaluating the judge
    edited_image: Optional[ImageRef] = None  # an edit made elsewhere (the precomputed editor)
    problem: Optional[str] = None  # set when the row itself is unusable: the sample is `invalid_input`
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # description, rationale, explanation, flags
    # A sample with several source images (KRIS-Bench's multi-element and temporal tasks): all of them, in the
    # data's order (`source_image` is the first); () for a sample with one.
    source_images: tuple[ImageRef, ...] = ()

    @property
    def sources(self) -> tuple[ImageRef, ...]:
        """Every source image of the sample, in the data's order (one for most samples)."""
        if self.source_images:
            return self.source_images
        return (self.source_image,) if self.source_image is not None else ()


def input_digests(samples: list[Sample]) -> dict[str, str]:
    """sample id -> a digest of the image files its row names (every source and the reference), for the samples
    whose images are files: a data file's identity covers only the paths it holds, so a resume compares these to
    find images replaced in place. Images held in the data itself (bytes, base64) are covered by its identity
    already."""
    out = {}
    for sample in samples:
        parts = []
        named = [("source_image", sample.source_image), ("reference_image", sample.reference_image)]
        named += [(f"source_images[{i}]", ref) for i, ref in enumerate(sample.source_images) if i]  # the others
        for name, ref in named:
            if ref is None or ref.path is None:
                continue
            try:
                digest = hashlib.sha256(read_regular(ref.path)).hexdigest()
            except (OSError, ValueError):  # gone or not a file: the sample is invalid_input, redone at any rate
                digest = "unreadable"
            parts.append(f"{name} {digest}")
        if parts:
            out[sample.id] = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return out


def load_samples(cfg: DataConfig) -> list[Sample]:
    """Read, map and validate the dataset. Raises `ConfigError` for problems of the whole dataset."""
    return load_benchmark(cfg)[0]


class Loaded(tuple):
    """What `load_benchmark` returns: (samples, identity), and `format`, the name of the format that read them."""

    format: str = ""

    def __new__(cls, samples: list[Sample], identity: str, format: str):
        loaded = super().__new__(cls, (samples, identity))
        loaded.format = format
        return loaded


def load_benchmark(cfg: DataConfig) -> Loaded:
    """`load_samples`, plus an identity of the dataset's content (a manifest's hash, a dataset's
    fingerprint) so a resumed run can tell that its data changed; `.format`: the format that read it."""
    table, fmt = _read_table(cfg)
    if len(table) == 0:
        raise ConfigError(f"dataset {cfg.dataset!r} has no samples.")
    if cfg.dataset_format != "auto":  # a format named on purpose must find its own fields, not fall back silently
        absent = [sources for name, sources in fmt.columns.items() if name in REQUIRED_COLUMNS
                  and not any(s in table.columns for s in sources.split("|"))]
        if absent:
            raise ConfigError(f"dataset {cfg.dataset!r} is not in format {cfg.dataset_format}: it has none of the "
                              f"columns {', '.join(absent)}; its columns: {sorted(table.columns)[:20]}. Set "
                              "`dataset_format: auto`, or the format it is in.")
    # A format's own mapping takes the columns the file has (RISEBench gives `reference` or `reference_txt`);
    # a mapping the user gives must exist.
    present = {name: "|".join(s for s in sources.split("|") if s in table.columns)
               for name, sources in fmt.columns.items()}
    mapping = _resolve_mapping({**{k: v for k, v in present.items() if v}, **cfg.columns}, table.columns)
    num_rows = len(table) if cfg.limit is None else min(cfg.limit, len(table))
    text = {name: table.text_column(sources, num_rows) for name, sources in mapping.items()
            if name in TEXT_COLUMNS}
    extras = {name: table.text_column([fmt.renames.get(name, name)], num_rows) for name in fmt.extras
              if fmt.renames.get(name, name) in table.columns}
    samples = [
        _make_sample(i, {name: values[i] for name, values in text.items()},
                     {name: _capped(table.image_ref(sources, i, several=name == "source_image"),
                                    cfg.max_image_pixels)
                      for name, sources in mapping.items() if name in IMAGE_COLUMNS},
                     {name: values[i] for name, values in extras.items()})
        for i in range(num_rows)
    ]
    duplicates = sorted(k for k, n in Counter(s.id for s in samples).items() if n > 1)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:20])
        raise ConfigError(f"dataset has {len(duplicates)} duplicate id(s): {shown}"
                          + (" ..." if len(duplicates) > 20 else ""))
    if all(s.problem for s in samples):
        shown = "; ".join(f"{s.id}: {s.problem}" for s in samples[:3])
        raise ConfigError(f"none of the {len(samples)} samples is usable "
                          f"({shown}{' ...' if len(samples) > 3 else ''}). "
                          "Check the column mapping and the image paths.")
    return Loaded(samples, table.identity, fmt.name)


def _capped(ref: Any, max_pixels: int) -> Any:
    """The reference (or each of a tuple of several sources) under the pixel cap."""
    if isinstance(ref, tuple):
        return tuple(dataclasses.replace(r, max_pixels=max_pixels) for r in ref)
    return None if ref is None else dataclasses.replace(ref, max_pixels=max_pixels)


def _resolve_mapping(columns: dict[str, str], available: list[str]) -> dict[str, list[str]]:
    """Canonical name -> source columns (alternatives, first non-empty wins); checks that they exist."""
    mapping, missing = {}, []
    for name in CANONICAL_COLUMNS:
        sources = columns[name].split("|") if name in columns else [name]
        absent = [s for s in sources if s not in available]
        if name in columns and absent:
            missing.append(f"{name} -> {'|'.join(absent)}")
        elif name not in columns and absent:
            if name in REQUIRED_COLUMNS:
                missing.append(name)
            continue
        mapping[name] = sources
    if missing:
        raise ConfigError(f"dataset lacks column(s) for: {', '.join(missing)}. Available columns: {available}. "
                          f"Map them with --columns, e.g. --columns id=index,source_image=image.")
    return mapping


def _first_present(values: list[Any]) -> Any:
    return next((v for v in values if v is not None and v != ""), None)


def _is_utf8(text: str) -> bool:
    """False for strings JSON can carry but UTF-8 can't (lone surrogates such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _make_sample(index: int, text: dict[str, Any], images: dict[str, Any],
                 extras: Optional[dict[str, Any]] = None) -> Sample:
    raw_id = text["id"]
    if raw_id is None or isinstance(raw_id, (dict, list, bool)) or str(raw_id).strip() == "" \
            or not _is_utf8(str(raw_id)):
        raise ConfigError(f"row {index} has no usable id ({raw_id!r}); every sample needs a unique id.")
    problems = []
    fields = {}
    for name in ("category", "instruction", "reference_text", *FIELD_COLUMNS):
        value = text.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name} is not text ({type(value).__name__})")
            value = None
        elif value is not None and not _is_utf8(value):
            problems.append(f"{name} is not valid Unicode text")
            value = None
        fields[name] = value.strip() if isinstance(value, str) else None
    for name in ("category", "instruction"):
        if not fields[name] and not any(p.startswith(name) for p in problems):
            problems.append(f"{name} is empty")
    several: tuple[ImageRef, ...] = ()
    if isinstance(images.get("source_image"), tuple):  # several source images (a list in the data)
        several = images["source_image"]
        images = {**images, "source_image": several[0] if several else None}
    checked = [(name, images.get(name)) for name in INPUT_IMAGES if name != "source_image" or not several]
    checked += [(f"source_image {k + 1} of {len(several)}", ref) for k, ref in enumerate(several)]
    for name, ref in checked:  # an unusable edited_image is the precomputed editor's edit_failed instead
        if ref is not None and ref.problem is not None:
            problems.append(f"{name}: {ref.problem}")
        elif ref is not None and ref.path is not None and (unusable := not_regular(ref.path)) is not None:
            problems.append(f"{name} file not found: {ref.path}" if unusable == "not found"
                            else f"{name} file {ref.path} is {unusable}, not an image file")
    if images.get("source_image") is None:
        problems.append("source_image is missing")
    return Sample(
        human_score=_human_score(index, text.get("human_score")),
        index=index,
        id=str(raw_id),
        category=fields["category"] or "",
        instruction=fields["instruction"] or "",
        reference_text=fields["reference_text"] or None,
        source_image=images.get("source_image"),
        reference_image=images.get("reference_image"),
        edited_image=images.get("edited_image"),
        problem="; ".join(problems) or None,
        fields={**{name: fields[name] for name in FIELD_COLUMNS if fields[name]}, **(extras or {})},
        source_images=several if len(several) > 1 else (),
    )


def _human_score(index: int, value: Any) -> Optional[float]:
    """A number (or numeric text) or empty (None, "", NaN). Anything else is the dataset's error, not a sample's: the
    mapping probably points at the wrong column, and a guessed human score would corrupt the meta-evaluation."""
    if value is None or (isinstance(value, str) and not value.strip()) \
            or (isinstance(value, float) and math.isnan(value)):  # pandas/Parquet write a missing rating as NaN
        return None
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number):
        raise ConfigError(f"row {index}: human_score {value!r} is not a finite number.")
    return number


# --- readers -------------------------------------------------------------------------------------


def _json_line(path: Path, number: Optional[int], text: str) -> Any:
    """One JSON value of a manifest (a JSONL line, or the whole JSON file when `number` is None)."""
    where = f"manifest {str(path)!r}" + (f" line {number}" if number is not None else "")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON: {err}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a manifest of samples.") from None


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def encoded_image(value: str) -> Optional[str]:
    """The base64 payload of an image given as text: a data URI (`data:image/png;base64,...`), or raw base64
    whose first bytes are an image signature. None for anything else (a path)."""
    if value.startswith("data:"):
        head, sep, payload = value.partition(",")
        return payload if sep and ";base64" in head else None
    if len(value) < 64 or not _BASE64.fullmatch(value[:4096]):
        return None
    try:
        start = base64.b64decode(value[:64], validate=False)
    except (binascii.Error, ValueError):
        return None
    return value if start.startswith(_IMAGE_MAGIC) else None


def string_ref(base: Optional[Path], value: str) -> ImageRef:
    """An image named by text in the data: base64 (or a data URI), else a path relative to `base`."""
    encoded = encoded_image(value)
    if encoded is not None:
        return ImageRef(encoded=encoded)
    if base is None:
        return ImageRef(problem=f"image value is not base64 and the dataset has no folder for a path: {value[:80]!r}")
    return file_ref(base, value)


def file_ref(base: Path, value: str) -> ImageRef:
    """An image path taken from the data, relative to `base`. Absolute paths and paths that leave `base`
    are refused without being opened: the data must not choose which files the harness reads."""
    normal = os.path.normpath(value)
    refused = ImageRef(problem=f"image path {value[:200]!r} is absolute or leaves the dataset's folder")
    if "\x00" in value or os.path.isabs(value) or normal == ".." or normal.startswith(".." + os.sep):
        return refused
    try:  # resolving reads symlinks (it opens no file): a link out of the folder is refused too
        if not (base / normal).resolve().is_relative_to(base.resolve()):
            return refused
    except (OSError, RuntimeError, ValueError):
        return refused
    return ImageRef(path=base / normal)


def read_json_file(path: Path) -> tuple[bytes, Any]:
    """A JSON or JSONL file's bytes and value (JSONL: the list of its lines' values)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is allowed, and not part of the first key
    except UnicodeDecodeError as err:
        raise ConfigError(f"manifest {str(path)!r} is not UTF-8 text (byte {err.start}): save it as UTF-8.") from None
    if path.suffix == ".jsonl":
        return raw, [_json_line(path, number, line) for number, line in enumerate(text.splitlines(), start=1)
                     if line.strip()]
    return raw, _json_line(path, None, text)


class ManifestTable:
    """Rows of objects (a JSON list or JSONL file, or a benchmark's records read into rows); image paths are
    relative to `base`, the manifest's folder."""

    def __init__(self, rows: Any, *, base: Path, identity: str, name: str):
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"manifest {name!r} must be a list of objects (JSON) or one object per line (JSONL).")
        self.base = base.resolve()
        self.rows = rows
        self.columns = sorted({key for row in rows for key in row})
        self.identity = identity

    @classmethod
    def from_file(cls, path: Path) -> ManifestTable:
        raw, rows = read_json_file(path)
        return cls(rows, base=path.parent, identity="sha256:" + hashlib.sha256(raw).hexdigest(), name=str(path))

    def __len__(self) -> int:
        return len(self.rows)

    def text_column(self, sources: list[str], num_rows: int) -> list[Any]:
        return [_first_present([row.get(s) for s in sources]) for row in self.rows[:num_rows]]

    def image_ref(self, sources: list[str], i: int, *, several: bool = False) -> Any:
        """The row's image; with `several` (the source image), a list of images in the data is a tuple of them (a
        sample with several source images), else a list is a problem."""
        value = _first_present([self.rows[i].get(s) for s in sources])
        if value is None:
            return None
        if isinstance(value, list):
            if not several:
                return ImageRef(problem=f"a list of {len(value)} images where one is expected: {str(value)[:120]}")
            if not value:
                return ImageRef(problem="an empty list of source images")
            return tuple(string_ref(self.base, v) if isinstance(v, str) and v else
                         ImageRef(problem=f"image value is not a path or base64 text: {v!r}"[:200]) for v in value)
        if not isinstance(value, str):
            return ImageRef(problem=f"image value is not a path or base64 text: {value!r}"[:200])
        return string_ref(self.base, value)


class DatasetTable:
    """A `datasets.Dataset`; text columns are read column-wise, image rows on demand."""

    def __init__(self, dataset, base: Optional[Path]):
        self.dataset = dataset
        self.base = base
        self.columns = list(dataset.column_names)
        self.identity = f"datasets:{dataset._fingerprint}"  # datasets' own hash of the data and its transforms
        import datasets

        caches = (datasets.config.HF_DATASETS_CACHE, datasets.config.HF_CACHE_HOME)
        self.roots = tuple(Path(p).resolve() for p in ([base] if base is not None else caches))
        self._image_columns: dict[str, Any] = {}
        self._path_only: dict[str, list[Optional[str]]] = {}  # per image column and row: the path of a bytes-less value

    def __len__(self) -> int:
        return len(self.dataset)

    def text_column(self, sources: list[str], num_rows: int) -> list[Any]:
        from datasets import ClassLabel

        part = self.dataset.select(range(num_rows)).select_columns(sources)
        columns = []
        for source in sources:  # reads just these columns (no image decoding)
            values = list(part[source])
            feature = part.features[source]
            if isinstance(feature, ClassLabel):  # stored as ints: give the label names
                values = [None if v is None else feature.int2str(v) for v in values]
            columns.append(values)
        return [_first_present(list(values)) for values in zip(*columns)]

    def image_ref(self, sources: list[str], i: int, *, several: bool = False) -> Optional[ImageRef]:
        """The row's image (a dataset's list of images is not read as several sources: `several` is ignored)."""
        for source in sources:
            column, present, is_image_feature = self._image_column(source)
            if not present[i]:
                continue
            if is_image_feature:
                if self._path_only[source][i] is None:  # bytes in the table: read when the image is needed
                    return ImageRef(dataset=column, row=i, roots=self.roots)  # `column` is cast to decode=False
                return self._image_path(self._path_only[source][i])
            value = column[i][source]
            if isinstance(value, str) and (self.base is not None or encoded_image(value) is not None):
                return string_ref(self.base, value)
            if isinstance(value, dict) and value.get("bytes"):
                return ImageRef(data=value["bytes"])
            return ImageRef(problem=f"unsupported image value: {str(value)[:80]!r}")
        return None

    def _image_column(self, source: str):
        """(one-column dataset, per-row 'has a value', is a datasets.Image column), cached per column."""
        if source not in self._image_columns:
            from datasets import Image as ImageFeature

            column = self.dataset.select_columns([source])
            is_image = isinstance(column.features[source], ImageFeature)
            # Null check on the Arrow column: no image bytes are copied or decoded here.
            arrow = column.with_format("arrow")[source]
            present = [not null for null in arrow.is_null().to_pylist()] if is_image \
                else [v is not None and v != "" for v in arrow.to_pylist()]
            if is_image:  # datasets would decode (fully) on row access, before our pixel cap could say no
                column = column.cast_column(source, ImageFeature(decode=False))
                # A value with no bytes is a file path (`Dataset.to_parquet` of images cast from paths, an
                # imagefolder): known per row from the Arrow struct, so a bad path is found now, not mid-run.
                import pyarrow.compute as pc

                no_bytes = pc.struct_field(arrow, "bytes").is_null().to_pylist()
                paths = pc.struct_field(arrow, "path").to_pylist()
                self._path_only[source] = [path if missing else None for missing, path in zip(no_bytes, paths)]
            self._image_columns[source] = (column, present, is_image)
        return self._image_columns[source]

    def _image_path(self, value: Optional[str]) -> ImageRef:
        """A path-only image value: relative to the dataset's file or folder (as a manifest's paths are), and only
        inside it, or inside datasets' download cache for a hub dataset."""
        if not value:
            return ImageRef(problem="the dataset's image has neither bytes nor a path")
        path = Path(value)
        if not path.is_absolute():
            if self.base is None:
                return ImageRef(problem=f"relative image path {value!r} in a hub dataset")
            path = self.base / path
        if not any(path.resolve().is_relative_to(root) for root in self.roots):
            return ImageRef(problem=f"image path {value!r} is outside the dataset's folder")
        return ImageRef(path=path)


def detect_format(cfg: DataConfig) -> type:
    """`dataset_format: auto`: the first registered format, in `priority` order, that detects `cfg.dataset`."""
    for fmt in _formats_by_priority():
        if fmt.detect(cfg):
            return fmt
    raise ConfigError(f"dataset {cfg.dataset!r}: no dataset format recognises it; set `dataset_format`.")


def _formats_by_priority() -> list:
    return sorted((fmt for _, fmt in FORMATS.items()), key=lambda fmt: fmt.priority)


def _read_table(cfg: DataConfig):
    """(the table of rows, its format: a bench_lib.formats.base.Format class)."""
    check_dataset_name(cfg)
    if cfg.dataset_format != "auto":
        fmt = FORMATS.get(cfg.dataset_format)
        return fmt.read(cfg), fmt
    fmt = detect_format(cfg)
    table = fmt.read(cfg)
    recognised = next((other for other in _formats_by_priority() if other is not fmt and other.recognise(fmt, table)),
                      fmt)
    return table, recognised


def check_dataset_name(cfg: DataConfig) -> None:
    """A local path must exist (it is never sent to the hub); a hub id must be usable: cached, or reachable,
    existing and not gated (one request, no retries). One line each, before `datasets` is even imported."""
    from .models import hub_problem, looks_local

    path = Path(cfg.dataset).expanduser()
    if path.exists():
        return
    if looks_local(cfg.dataset) or cfg.dataset.count("/") != 1 or path.suffix.lower() in (
            ".json", ".jsonl", ".parquet", ".csv"):
        raise ConfigError(f"`dataset` {cfg.dataset!r}: no such file or folder (a hub dataset is named ORG/NAME).")
    problem = hub_problem(cfg.dataset, repo_type="dataset", revision=cfg.dataset_revision, key="dataset")
    if problem:
        raise ConfigError(problem)
