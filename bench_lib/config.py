"""Run configuration: one dataclass per concern, a YAML recipe, `--key value` overrides.

Every field of every dataclass below is a config key. It can be set in the recipe given with
`--config` and on the command line; the command line wins. An unknown key or a value of the
wrong type is a `ConfigError` (the entry script turns it into exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
DEFAULT_PROMPTS_DIR = str(Path(__file__).resolve().parent / "prompts")
CANONICAL_COLUMNS = ("id", "category", "instruction", "source_image", "reference_text", "reference_image",
                     "human_score")
SUBSCORES = ("instruction", "consistency", "quality")  # what the judge rates, each 0-10
JUDGE_MODES = ("logits", "generate")
SCORE_FORMULAS = ("viescore", "mean", "min", "instruction")
BASELINES = ("identity", "blank")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
MAX_PROCESS_GROUP_TIMEOUT = 30 * 24 * 3600  # far beyond any model load; larger values overflow the timers


class ConfigError(ValueError):
    """A bad recipe, a bad command-line value or a bad dataset: the user has to fix something."""


@dataclass
class DataConfig:
    dataset: str = field(
        default="",
        metadata={"help": "Hub dataset id, local dataset folder, or a .json/.jsonl manifest "
                          "(image paths relative to the manifest)."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to evaluate (hub or local dataset)."})
    dataset_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    columns: dict = field(
        default_factory=dict,
        metadata={"help": "Canonical name -> source column, e.g. id=index,source_image=image. Unnamed canonical "
                          "columns map to themselves. 'a|b' takes the first non-empty of columns a and b. On the "
                          "command line it updates the recipe's mapping."},
    )
    limit: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N samples."})
    max_image_pixels: int = field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metadata={"help": "Images with more pixels are invalid_input, never decoded (decompression bombs)."},
    )

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("`dataset` is required (hub id, local folder or .json/.jsonl manifest).")
        unknown = sorted(set(self.columns) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ConfigError(f"`columns` has unknown canonical names {unknown}; known: {list(CANONICAL_COLUMNS)}.")
        for name, source in self.columns.items():
            if not isinstance(source, str) or not source:
                raise ConfigError(f"`columns.{name}` must be a non-empty column name, got {source!r}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"`limit` must be >= 1, got {self.limit}.")
        _check_positive("max_image_pixels", self.max_image_pixels)


@dataclass
class EditorConfig:
    editor: str = field(
        default="diffusers",
        metadata={"help": "Editor backend: diffusers, or the baselines identity (returns the source) and blank "
                          "(uniform grey)."},
    )
    editor_model: str = field(
        default="", metadata={"help": "Diffusers pipeline: hub id or local path; 'tiny:<name>' builds a tiny one."}
    )
    editor_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the editor."})
    editor_dtype: str = field(default="bfloat16", metadata={"help": f"One of {DTYPES}."})
    editor_kwargs: dict = field(
        default_factory=dict,
        metadata={"help": "Extra keyword arguments for every pipeline call (JSON or k=v,...). On the command "
                          "line they update the recipe's mapping; k=null removes a key."},
    )
    edit_batch_size: int = field(default=1, metadata={"help": "Samples each rank edits between two barriers."})
    baselines: str = field(
        default="",
        metadata={"help": "Sanity baselines judged beside the editor in the same run, comma-separated: identity "
                          "(the source unchanged), blank (uniform grey). They cost only judge time; the report "
                          "shows their scores next to the editor's, so a judge that rewards doing nothing shows."},
    )

    def __post_init__(self):
        if not self.editor_model and self.editor == "diffusers":
            raise ConfigError("`editor_model` is required.")
        _check_dtype("editor_dtype", self.editor_dtype)
        _check_positive("edit_batch_size", self.edit_batch_size)
        unknown = sorted(set(self.baseline_names()) - set(BASELINES))
        if unknown:
            raise ConfigError(f"`baselines` has unknown names {unknown}; known: {list(BASELINES)}.")
        reserved = {"image", "prompt", "generator", "output_type", "return_dict"} & set(self.editor_kwargs)
        if reserved:
            raise ConfigError(f"`editor_kwargs` may not set {sorted(reserved)}: the harness sets them "
                              "(one image, prompt and seeded generator per call; PIL output).")

    def baseline_names(self) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in self.baselines.split(",") if name.strip()))


@dataclass
class JudgeConfig:
    judge: str = field(default="qwen_vl", metadata={"help": "Judge backend (see bench_lib.judges.JUDGES)."})
    judge_model: str = field(
        default="", metadata={"help": "Qwen-VL judge: hub id or local path; 'tiny:<name>' builds a tiny one."}
    )
    judge_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the judge."})
    judge_dtype: str = field(default="bfloat16", metadata={"help": f"One of {DTYPES}."})
    judge_mode: str = field(
        default="logits",
        metadata={"help": "logits: each sub-score is the expected value of the judge's next-token distribution "
                          "over 0-10 (one batched forward per sub-score, fast). generate: the judge writes a short "
                          "rationale and a JSON object of sub-scores (greedy, batched)."},
    )
    judge_batch_size: int = field(default=8, metadata={"help": "Judge prompts per forward pass."})
    judge_max_new_tokens: int = field(
        default=256, metadata={"help": "generate mode: the most tokens the judge may write per answer."}
    )
    judge_max_pixels: int = field(
        default=512 * 512,
        metadata={"help": "Images larger than this are downscaled (aspect kept) before the judge sees them."},
    )
    judge_min_digit_mass: float = field(
        default=0.5,
        metadata={"help": "A judgement whose probability of answering with a digit at all is below this is "
                          "off-format: the sample becomes judge_failed instead of getting a score."},
    )
    score_formula: str = field(
        default="viescore",
        metadata={"help": "How `score` combines the sub-scores I (instruction), C (consistency), Q (quality): "
                          "viescore = sqrt(min(I, C) * Q); mean = weighted mean with score_weights; min = "
                          "min(I, C, Q); instruction = I. Applied when results are written, so changing it on a "
                          "resume re-scores without re-judging."},
    )
    score_weights: dict = field(
        default_factory=lambda: {"instruction": 1.0, "consistency": 1.0, "quality": 1.0},
        metadata={"help": "Weights of the `mean` score formula (k=v,...; a sub-score not named weighs 1; "
                          "normalised to sum 1)."},
    )
    prompts_dir: str = field(
        default=DEFAULT_PROMPTS_DIR, metadata={"help": "Folder of rubric files <category>.txt plus default.txt."}
    )

    def __post_init__(self):
        if not self.judge_model:
            raise ConfigError("`judge_model` is required.")
        _check_dtype("judge_dtype", self.judge_dtype)
        if self.judge_mode not in JUDGE_MODES:
            raise ConfigError(f"`judge_mode` must be one of {list(JUDGE_MODES)}, got {self.judge_mode!r}.")
        _check_positive("judge_batch_size", self.judge_batch_size)
        _check_positive("judge_max_new_tokens", self.judge_max_new_tokens)
        if self.score_formula not in SCORE_FORMULAS:
            raise ConfigError(f"`score_formula` must be one of {list(SCORE_FORMULAS)}, got {self.score_formula!r}.")
        unknown = sorted(set(self.score_weights) - set(SUBSCORES))
        if unknown:
            raise ConfigError(f"`score_weights` has unknown sub-scores {unknown}; known: {list(SUBSCORES)}.")
        weights = {k: self.score_weights.get(k, 1.0) for k in SUBSCORES}  # a sub-score not named weighs 1
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights.values()) \
                or sum(weights.values()) <= 0:
            raise ConfigError(f"`score_weights` must be numbers >= 0 with a positive sum, got {self.score_weights}.")
        self.score_weights = {k: float(w) for k, w in weights.items()}
        _check_positive("judge_max_pixels", self.judge_max_pixels)
        if not 0.0 <= self.judge_min_digit_mass <= 1.0:
            raise ConfigError(f"`judge_min_digit_mass` must be in [0, 1], got {self.judge_min_digit_mass}.")
        if not any(p.stem.lower() == "default" for p in Path(self.prompts_dir).glob("*.txt")):
            raise ConfigError(f"`prompts_dir` {self.prompts_dir!r} has no default.txt rubric.")


@dataclass
class RunConfig:
    output_dir: str = field(default="outputs/run", metadata={"help": "Folder for edits, results and reports."})
    gallery: bool = field(
        default=True,
        metadata={"help": "Write gallery.html: every sample's source, edit and reference thumbnails with its "
                          "scores, filterable by category and status (one self-contained file)."},
    )
    seed: int = field(default=0, metadata={"help": "Base seed; each sample's seed derives from (seed, sample id)."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Discard what output_dir holds (edits, records, results) and start over, instead "
                          "of resuming a run with the same settings."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Let model repositories run their own Python code. Off: only library classes load."},
    )
    process_group_timeout: int = field(
        default=1800, metadata={"help": "Seconds a rank waits at a barrier or gather before the run fails."}
    )

    def __post_init__(self):
        if not self.output_dir.strip():
            raise ConfigError("`output_dir` is empty: name the folder for edits, results and reports.")
        _check_positive("process_group_timeout", self.process_group_timeout)
        if self.process_group_timeout > MAX_PROCESS_GROUP_TIMEOUT:
            raise ConfigError(f"`process_group_timeout` must be at most {MAX_PROCESS_GROUP_TIMEOUT} seconds (30 days), "
                              f"got {self.process_group_timeout}.")


@dataclass
class BenchmarkConfig:
    data: DataConfig
    editor: EditorConfig
    judge: JudgeConfig
    run: RunConfig
    recipe: Optional[str] = None  # the YAML file the values came from, for the log and report.json

    def to_dict(self) -> dict[str, Any]:
        flat = {}
        for part in (self.data, self.editor, self.judge, self.run):
            flat.update(dataclasses.asdict(part))
        return flat


SECTIONS = {"data": DataConfig, "editor": EditorConfig, "judge": JudgeConfig, "run": RunConfig}


def _check_dtype(key: str, value: str) -> None:
    if value not in DTYPES:
        raise ConfigError(f"`{key}` must be one of {DTYPES}, got {value!r}.")


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"`{key}` must be >= 1, got {value}.")


def config_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Every config key -> (section, field, resolved type)."""
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (section, f, hints[f.name])
    return out


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _scalar(text: str) -> Any:
    """A command-line `k=v` value: a number, true/false, null, or else the text exactly as given."""
    word = text.strip()
    if _NUMBER.fullmatch(word):
        return int(word) if re.fullmatch(r"[+-]?\d+", word) else float(word)
    return {"true": True, "false": False, "null": None}.get(word.lower(), text)


def _parse_mapping(text: str) -> dict:
    """`{"a": "b"}` (JSON) or `a=b,c=d`. In the second form values are numbers, true/false, null or text
    kept exactly (`negative_prompt= ` is one space); use JSON for text with commas."""
    if text.strip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"invalid JSON object {text!r}: {err}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"expected a JSON object, got {text!r}")
        return value
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value pairs separated by commas, got {item!r} in {text!r} "
                              f"(write values that contain commas as JSON: '{{\"key\": \"a, b\"}}')")
        out[key.strip()] = _scalar(value)
    return out


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check or convert one value (from YAML, or a string from the command line) to the field's type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        tp = args[0]
    if tp is dict:
        if isinstance(value, str):
            return _parse_mapping(value)
        if not isinstance(value, dict):
            raise ConfigError(f"`{key}` must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"`{key}` must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"`{key}` must be a number, got {value!r}")
        try:
            converted = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"`{key}` must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"`{key}` must be an integer, got {value!r}")
        return converted
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"`{key}` must be a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {tp} for {key}")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2 itself; keep one error path
        raise ConfigError(message)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        description="Edit every sample with an image-editing model, score each edit with a VLM judge, report.",
        epilog="Every key can also be set in the --config YAML recipe; the command line wins.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="YAML recipe (default: configs/smoke.yaml, the offline smoke run).")
    for name, (section, f, tp) in config_fields().items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "" if default in ("", None, {}) else f" (default: {default})"
        flag = {"nargs": "?", "const": "true"} if tp is bool else {}  # `--overwrite` alone means true
        parser.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="VALUE", **flag,
                            help=f"[{section}] {f.metadata.get('help', '')}{shown}")
    return parser


def parse_config(argv: Optional[list[str]] = None) -> BenchmarkConfig:
    """Parse `--config recipe.yaml` plus `--key value` overrides into a validated `BenchmarkConfig`."""
    cli = vars(build_arg_parser().parse_args(argv))
    recipe = cli.pop("config", None)
    recipe_path = Path(recipe) if recipe else DEFAULT_RECIPE
    values = load_recipe(recipe_path)
    for key, value in cli.items():
        if config_fields()[key][2] is dict:
            # A mapping on the command line updates the recipe's mapping; `key=null` removes a key.
            recipe_mapping = values.get(key) if isinstance(values.get(key), dict) else {}
            merged = {**recipe_mapping, **_convert(key, value, dict)}
            value = {k: v for k, v in merged.items() if v is not None}
        values[key] = value
    if recipe is None:
        real = [k for k in ("editor_model", "judge_model") if not str(values.get(k, "")).startswith("tiny:")]
        if real:
            # The smoke recipe's settings (2 steps, 64 px, fp32, no off-format check) would silently apply.
            raise ConfigError(f"{', '.join(real)} set without --config: the default recipe is the offline smoke "
                              "run for tiny models. Pass a recipe, e.g. --config configs/qwen_image_edit.yaml.")
    return config_from_dict(values, recipe=str(recipe_path))


def load_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe {str(path)!r} does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {str(path)!r} must be a mapping of config keys.")
    return values


def config_from_dict(values: dict[str, Any], *, recipe: Optional[str] = None) -> BenchmarkConfig:
    """Validate a flat {key: value} mapping (recipe + overrides) into a `BenchmarkConfig`."""
    known = config_fields()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}. Known keys: {sorted(known)}.")
    per_section: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        section, _, tp = known[key]
        per_section[section][key] = _convert(key, value, tp)
    try:
        parts = {section: cls(**per_section[section]) for section, cls in SECTIONS.items()}
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return BenchmarkConfig(**parts, recipe=recipe)
