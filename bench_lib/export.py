"""A finished run as a Hugging Face dataset: each results row with its images, so the hub's dataset viewer shows
the source, the edit (and the reference) beside the scores.

Columns: `source_image`, `edited_image` and, where the data has references, `reference_image` (`datasets.Image`,
the encoded bytes as they are: the edit's PNG, the source's own file), where samples have several source images
`source_images` (every one, in order; `source_image` is the first), then every results.jsonl column in its
declared type (report.json's `results_features`). The run's headline, provenance and config go into the dataset
card (README.md) and `DatasetInfo.description`. Nothing is recomputed: the rows are results.jsonl's, read through
`store.read_run`, which refuses a folder whose files come from different reporting passes.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from .config import ConfigError
from .data import IMAGE_FORMATS, ImageRef, Sample, input_digests, load_benchmark, not_regular
from .options import config_from_dict
from .store import read_run, stamp_line

CARD_FILE = "README.md"


def export_run(run_dir: Path, out_dir: Path, *, dataset: Optional[str] = None):
    """Write the run in `run_dir` to `out_dir` (`save_to_disk`, plus the card); returns the `datasets.Dataset`.
    `dataset`: where the run's dataset is now, when it has moved since the run."""
    import datasets

    datasets.disable_progress_bars()
    run = read_run(Path(run_dir))
    report, rows = run["report"], run["rows"]
    if "results_features" not in report:
        raise ConfigError(f"{run_dir}: report.json has no results_features (written by an older harness): "
                          "rerun the same command to rewrite the outputs, then export.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file: give a new (or empty) folder for the dataset.")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} exists and is not empty: choose a new folder.")
    loaded, identity, where = _samples(report, dataset)
    expected = ((run.get("fingerprint") or {}).get("data") or {}).get("dataset_content")
    if identity != expected:  # the same ids are not the same data: the images would belong to other samples
        moved = (" (a dataset read by `datasets` is identified by its fingerprint, which also changes when its "
                 "files move)" if str(expected).startswith("datasets:") else "")
        raise ConfigError(f"the dataset at {where} is not the run's data: its content is {identity}, the run's was "
                          f"{expected}{moved}. Pass --dataset with the data the run used.")
    samples = {s.id: s for s in loaded}
    missing = [r["id"] for r in rows if r["id"] not in samples]
    if missing:
        raise ConfigError(f"the dataset has no sample {missing[0]!r} of the run ({len(missing)} missing): is it the "
                          "run's dataset? Pass --dataset with where it is now.")
    recorded = (run["run"].get("inputs") or {}) if isinstance(run["run"].get("inputs"), dict) else {}
    now = input_digests([s for s in (samples[r["id"]] for r in rows)  # a file gone since: an empty image below
                         if all(ref is None or ref.path is None or not_regular(ref.path) is None
                                for ref in (*s.sources, s.reference_image))])
    replaced = [i for i, digest in now.items() if recorded.get(i, digest) != digest]
    if replaced:  # the data file names its images by path: the same file, other images
        raise ConfigError(f"the image files of {len(replaced)} sample(s) of the dataset at {where} are not the ones "
                          f"the run judged (e.g. {replaced[0]!r}): they were replaced since. Pass --dataset with the "
                          "data the run used.")
    results = datasets.Features.from_dict(report["results_features"])
    if not results["extras"]:  # no format fields: Parquet (push_to_hub) cannot store an empty struct
        del results["extras"]
    with_reference = any(samples[r["id"]].reference_image is not None for r in rows)
    several = any(len(samples[r["id"]].sources) > 1 for r in rows)  # KRIS's several-source tasks: every one
    images = {"source_image": datasets.Image(), "edited_image": datasets.Image(),
              **({"reference_image": datasets.Image()} if with_reference else {}),
              **({"source_images": datasets.Sequence(datasets.Image())} if several else {})}
    features = datasets.Features({**images, **{name: f for name, f in results.items() if name != "edited_image"},
                                  "edited_image_path": datasets.Value("string")})

    def records():
        for row in rows:
            sample = samples[row["id"]]
            record = {name: row.get(name) for name in results if name != "edited_image"}
            record["edited_image_path"] = row["edited_image"]
            record["source_image"] = _image(sample.source_image)
            record["edited_image"] = (_image(ImageRef(path=Path(run_dir) / row["edited_image"]))
                                      if row.get("edited_image") else None)
            if with_reference:
                record["reference_image"] = _image(sample.reference_image)
            if several:
                record["source_images"] = [_image(ref) for ref in sample.sources]
            yield record

    info = datasets.DatasetInfo(description=_summary(report))
    build = out_dir / ".build"  # the generator's Arrow cache: inside out_dir (never the user's HF cache), removed
    try:
        exported = datasets.Dataset.from_generator(records, features=features, info=info, cache_dir=str(build))
        exported.save_to_disk(str(out_dir))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    exported = datasets.load_from_disk(str(out_dir))
    (out_dir / CARD_FILE).write_text(card(report), encoding="utf-8")
    return exported


def push(exported, out_dir: Path, repo: str, *, private: bool) -> None:
    """Upload the exported dataset and its card to the hub (only when the user asks: `--push_to_hub`)."""
    from huggingface_hub import DatasetCard

    exported.push_to_hub(repo, private=private)
    DatasetCard((Path(out_dir) / CARD_FILE).read_text(encoding="utf-8")).push_to_hub(repo, repo_type="dataset")


def _samples(report: dict[str, Any], dataset: Optional[str]) -> tuple[list[Sample], str, str]:
    """The samples of the dataset (where it is now), its content identity, and where it was read."""
    config = dict(report["meta"]["config"])
    config["dataset"] = dataset or report["meta"].get("dataset_path") or config["dataset"]
    cfg = config_from_dict(config)
    from .preflight import check_dataset_name

    check_dataset_name(cfg.data)
    samples, identity = load_benchmark(cfg.data)
    return samples, identity, cfg.data.dataset


def _image(ref: Optional[ImageRef]) -> Optional[dict[str, Any]]:
    """The image's encoded bytes as they are, or None (an empty cell; the row's status and error say why) when it
    can't be read: a missing file, bad base64, not an image, or not a regular file (a FIFO is never waited on)."""
    if ref is None or ref.problem is not None:
        return None
    try:
        data = ref.read_bytes()
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS):  # the header only: the viewer can show it
            pass
    except (OSError, ValueError):  # binascii.Error and PIL's UnidentifiedImageError included
        return None
    return {"bytes": data, "path": None}


def _summary(report: dict[str, Any]) -> str:
    meta = report["meta"]
    overall = report["overall"]
    mean = overall.get("mean")
    return (f"Edits of {_public(meta['editor_model'])} ({meta['editor']}) on {_public(meta['dataset'])}, judged by "
            f"{_public(meta['judge_model'])} under the {meta['protocol']} protocol: {meta['primary_metric']} "
            f"{'none' if mean is None else f'{mean:.2f}'} over {overall.get('count')} scored samples. "
            f"{stamp_line(report['stamp'])}")


def card(report: dict[str, Any]) -> str:
    """The dataset card: what the rows are, the headline, and the provenance and config as JSON. Meant to be
    published: a path on this machine is shown by its last part (the dataset's file or folder name), and the means
    are rounded (4 decimals; 2 in the headline line, as in report.md)."""
    meta = report["meta"]
    lines = ["---", "tags:", "- image-editing", "- benchmark-results", "---", "",
             f"# Image-editing results: {_public(meta['editor_model'])}", "", _summary(report), "",
             "Each row is one benchmark sample: the source image, the edit, the reference where the data has one, "
             "and every score and judge answer of the run's results.jsonl (`edited_image_path` is the edit's file "
             "in the run folder). `status` other than `ok` means the sample was not scored; its `error` says why.",
             "", "## Overall", "", "```json", _json(report["overall"], rounded=True), "```", "",
             "## Provenance", "", "```json", _json(report.get("provenance")), "```", "",
             "## Config", "", "```json", _json(meta.get("config")), "```", ""]
    return "\n".join(lines)


def _json(value: Any, *, rounded: bool = False) -> str:
    return json.dumps(_public(value, rounded=rounded), indent=2, ensure_ascii=False)


def _public(value: Any, *, rounded: bool = False) -> Any:
    """`value` with every absolute local path replaced by its last part (and, `rounded`, every float rounded to 4
    decimals: the means, not a config's values)."""
    if isinstance(value, dict):
        return {key: _public(v, rounded=rounded) for key, v in value.items()}
    if isinstance(value, list):
        return [_public(v, rounded=rounded) for v in value]
    if isinstance(value, float) and rounded:
        return round(value, 4)
    if isinstance(value, str) and re.match(r"[A-Za-z]:[\\/]", value):  # a Windows path
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value
    if isinstance(value, str):  # "/a/b/c", "~/a/c", "precomputed:/a/c" -> "c"; URLs and ORG/NAME stay
        return _ABSOLUTE.sub(lambda m: m.group(1), value)
    return value


_ABSOLUTE = re.compile(r"(?<![\w.\-/~])~?/(?:[^\s/\"']+/)*([^\s/\"']+)/?")
