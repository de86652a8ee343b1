"""Run configuration: one dataclass per concern, a YAML recipe, `--key value` overrides.

The core sections (data, editor, judge, run, sweep) are defined here; every editor and judge backend owns a
section of its own (`Backend.Config`, see bench_lib.backends). Every field of every section is a config key,
set in the recipe given with `--config` or on the command line (`--key value` or `--key-name value`); the
command line wins. An unknown key or a value of the wrong type is a `ConfigError` (the entry script turns it
into one line and exit code 2). bench_lib.options gathers every key of every section (the backends' too),
builds the command line and assembles a `BenchmarkConfig`.

A key that names a registered thing (an editor, a protocol, a dataset format, ...) says which registry with
`option(choices=...)`; bench_lib.options checks its value against that registry and lists the registry's
names in the key's help (the `{choices}` in its help text). This module is the leaf every other one may
import: it imports no bench_lib module.

Every field is declared with `option(...)`, which requires its help text and whether it changes results
(`result=True`: part of the run's fingerprint, so a resume with another value is refused; `result=False`:
it does not change any result, or is applied afresh when results are written). A section may transform its
fingerprint (`fingerprint()`), e.g. the data is identified by content rather than by the name it was given.
A test fails when a field is unclassified.

This module imports no model library: `--help` and every config error come back at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = PROJECT_ROOT / "configs" / "smoke.yaml"
DEFAULT_PROMPTS_DIR = str(Path(__file__).resolve().parent / "prompts")
CANONICAL_COLUMNS = ("id", "category", "instruction", "source_image", "reference_text", "reference_image",
                     "human_score", "edited_image", "description", "rationale", "explanation")
SUBSCORES = ("instruction", "consistency", "quality")  # what the default protocol's judge rates, each 0-10
JudgeMode = Literal["logits", "generate"]
ScoreFormula = Literal["viescore", "mean", "min", "instruction"]
FailurePolicy = Literal["strict", "reference"]
Dtype = Literal["float32", "bfloat16", "float16"]
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_JUDGE_MAX_PIXELS = 512 * 512  # this project's prompts: images the judge sees are at most this large
MAX_PROCESS_GROUP_TIMEOUT = 30 * 24 * 3600  # far beyond any model load; larger values overflow the timers


class ConfigError(ValueError):
    """A bad recipe, a bad command-line value or a bad dataset: the user has to fix something."""


def option(default: Any = dataclasses.MISSING, *, help: str, result: bool,
           default_factory: Any = dataclasses.MISSING, path: Optional[str] = None, choices: Optional[str] = None,
           also: tuple[str, ...] = (), several: bool = False) -> Any:
    """A config key: its default, its help text, and whether it changes results (see the module docstring).

    `path`: a recipe's relative value is resolved against the recipe's folder, always ("always": a folder the
    run reads or writes) or when something exists there ("local": else it names a hub repository).
    `choices`: the kind of registry whose names the value takes ("editor", "protocol", ...; bench_lib.registry),
    `also` the other values it may take ("auto"), `several`: a comma-separated list of names."""
    assert path in (None, "always", "local"), path
    metadata = {"help": help, "result": result, "path": path}
    if choices is not None:
        metadata.update(choices=choices, also=tuple(also), several=several)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def result_fields(section: Any) -> dict[str, Any]:
    """The fields of a section that change results, with their values: its default fingerprint."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.metadata["result"]}


def section_fingerprint(section: Any) -> dict[str, Any]:
    custom = getattr(section, "fingerprint", None)
    return custom() if callable(custom) else result_fields(section)


# --- the core sections -------------------------------------------------------------------------------


@dataclass
class DataConfig:
    dataset: str = option(
        "", result=True, path="local",
        help="Hub dataset id, local dataset folder, a single .parquet/.csv/.json/.jsonl file, or a JSON/JSONL "
             "manifest (image paths relative to it). Identified by content in the fingerprint.")
    dataset_format: str = option(
        "auto", result=True, choices="format", also=("auto",),
        help="How to read `dataset`: auto (detected from its files and fields), or one format: {choices}.")
    dataset_split: str = option("train", result=True, help="Split to evaluate (hub or local dataset).")
    dataset_revision: Optional[str] = option(None, result=True, help="Hub revision (branch, tag or commit).")
    columns: dict = option(
        default_factory=dict, result=True,
        help="Canonical name -> source column, e.g. id=index,source_image=image. Unnamed canonical columns map "
             "to themselves. 'a|b' takes the first non-empty of columns a and b. On the command line it updates "
             "the recipe's mapping.")
    limit: Optional[int] = option(None, result=False, help="Evaluate only the first N samples.")
    max_image_pixels: int = option(
        DEFAULT_MAX_IMAGE_PIXELS, result=True,
        help="Images with more pixels are invalid_input, never decoded (decompression bombs).")

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("`dataset` is required (hub id, local folder or .json/.jsonl manifest).")
        unknown = sorted(set(self.columns) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ConfigError(f"`columns` has unknown canonical names {unknown}"
                              f"{suggest(unknown[0], CANONICAL_COLUMNS)}; known: {list(CANONICAL_COLUMNS)}.")
        for name, source in self.columns.items():
            if not isinstance(source, str) or not source:
                raise ConfigError(f"`columns.{name}` must be a non-empty column name, got {source!r}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"`limit` must be >= 1, got {self.limit}.")
        _check_positive("max_image_pixels", self.max_image_pixels)

    def fingerprint(self) -> dict[str, Any]:
        """The dataset's name is replaced by its content's identity (added by the runner), and only the
        column mappings that rename something count."""
        out = result_fields(self)
        del out["dataset"]
        out["columns"] = {k: v for k, v in self.columns.items() if k != v}
        return out


@dataclass
class EditorConfig:
    editor: str = option("diffusers", result=True, choices="editor", help="Editor backend: {choices}.")
    edit_batch_size: int = option(1, result=False, help="Samples each rank edits between two barriers.")
    baselines: str = option(
        "", result=False, choices="baseline", several=True,
        help="Sanity baselines judged beside the editor in the same run, comma-separated: {choices}. They cost "
             "only judge time; the report shows their scores next to the editor's, so a judge that rewards doing "
             "nothing shows.")

    def __post_init__(self):
        _check_positive("edit_batch_size", self.edit_batch_size)

    def baseline_names(self) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in self.baselines.split(",") if name.strip()))


@dataclass
class JudgeConfig:
    judge: str = option("qwen_vl", result=True, choices="judge", help="Judge backend: {choices}.")
    protocol: str = option(
        "auto", result=True, choices="protocol", also=("auto",),
        help="How edits are scored: auto (the protocol of the dataset's format when it is a known benchmark's, "
             "else default), or {choices}.")
    category_map: dict = option(
        default_factory=dict, result=True,
        help="Dataset category -> the protocol's dimension (or, for default, rubric name), case-insensitive "
             "(k=v,...). Known benchmarks' categories are mapped already; an unmapped one uses the protocol's "
             "default and is named in one warning.")
    judge_mode: JudgeMode = option(
        "logits", result=True,
        help="logits: each answer is the expected value of the judge's next-token distribution over the answer "
             "scale (one batched forward per question, fast). generate: the judge writes a short rationale and a "
             "JSON object of answers (greedy, batched).")
    judge_batch_size: int = option(8, result=False, help="Judge prompts per forward pass.")
    judge_max_pixels: Optional[int] = option(
        None, result=True,
        help=f"Images larger than this are downscaled (aspect kept) before the judge sees them. Unset: "
             f"{DEFAULT_JUDGE_MAX_PIXELS} with this project's prompts; with `judge_prompts`, the sizes the "
             "benchmark sends (RISEBench: 768 px on the long side; the others: full resolution).")
    score_formula: ScoreFormula = option(
        "viescore", result=False,
        help="default protocol: how `score` combines the sub-scores I (instruction), C (consistency), Q "
             "(quality): viescore = "
             "sqrt(min(I, C) * Q); mean = weighted mean with score_weights; min = min(I, C, Q); instruction = I. "
             "Applied when results are written, so changing it on a resume re-scores without re-judging.")
    score_weights: dict = option(
        default_factory=lambda: {"instruction": 1.0, "consistency": 1.0, "quality": 1.0}, result=False,
        help="Weights of the `mean` score formula (k=v,...; a sub-score not named weighs 1; normalised to sum 1).")
    prompts_dir: str = option(
        # the rubrics' hashes are in the fingerprint, not the folder's name
        DEFAULT_PROMPTS_DIR, result=False, path="always",
        help="Folder of rubric files <category>.txt plus default.txt (matched case-insensitively).")
    # --- a benchmark's own prompts and failure rules (bench_lib.prompt_files, Protocol.fill_failure) ---
    judge_prompts: str = option(
        # in the fingerprint through the protocol's prompt digest (the file's sha256 and the texts taken)
        "", result=False, path="local",
        help="The benchmark's own prompt file, read at run time (never copied): a local file, a local checkout of "
             "the benchmark's repository, or an https URL of the file at a pinned commit (downloaded once into "
             "the prompt cache, then used offline). Empty: this project's own wording of the benchmark's criteria "
             "(the report says it is not comparable with the published table).")
    judge_prompts_sha256: str = option(
        "", result=False,
        help="sha256 of the `judge_prompts` file's bytes; a file that differs stops the run. Required for a URL.")
    failure_policy: FailurePolicy = option(
        "strict", result=False,
        help="How an answer that does not parse counts. strict: the sample is judge_failed and enters no mean. "
             "reference: as the benchmark's own code counts it (RE-Edit fills no / 5 / [5, 5]; RISEBench counts "
             "it 0 in accuracy and leaves it out of the score; KRIS-Bench drops that dimension; VIEScore guesses "
             "a score, seeded per sample). Applied when results are written; the report counts every filled, "
             "guessed or dropped value.")

    def __post_init__(self):
        _check_positive("judge_batch_size", self.judge_batch_size)
        if self.judge_max_pixels is not None:
            _check_positive("judge_max_pixels", self.judge_max_pixels)
        unknown = sorted(set(self.score_weights) - set(SUBSCORES))
        if unknown:
            raise ConfigError(f"`score_weights` has unknown sub-scores {unknown}; known: {list(SUBSCORES)}.")
        weights = {k: self.score_weights.get(k, 1.0) for k in SUBSCORES}  # a sub-score not named weighs 1
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                   for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"`score_weights` must be numbers >= 0 with a positive sum, got {self.score_weights}.")
        self.score_weights = {k: float(w) for k, w in weights.items()}
        for category, target in self.category_map.items():
            if not isinstance(target, str) or not target.strip():
                raise ConfigError(f"`category_map.{category}` must name a dimension or rubric, got {target!r}.")
        self.judge_prompts_sha256 = self.judge_prompts_sha256.strip().lower()
        if self.judge_prompts_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.judge_prompts_sha256):
            raise ConfigError(f"`judge_prompts_sha256` must be 64 hex digits, got {self.judge_prompts_sha256!r}.")
        if self.judge_prompts_sha256 and not self.judge_prompts:
            raise ConfigError("`judge_prompts_sha256` is set but `judge_prompts` is not: name the file it pins.")
        if not any(p.stem.lower() == "default" for p in Path(self.prompts_dir).glob("*.txt")):
            raise ConfigError(f"`prompts_dir` {self.prompts_dir!r} has no default.txt rubric.")

    def fingerprint(self) -> dict[str, Any]:
        """The image limit as applied: unset means the default limit with this project's prompts (so such runs
        keep their fingerprint), the protocol's own sizes with the benchmark's (named by the protocol digest)."""
        out = result_fields(self)
        if out["judge_max_pixels"] is None:
            out["judge_max_pixels"] = "protocol" if self.judge_prompts else DEFAULT_JUDGE_MAX_PIXELS
        return out


@dataclass
class RunConfig:
    output_dir: str = option("outputs/run", result=False, path="always", help="Folder for edits, results and reports.")
    gallery: bool = option(
        True, result=False,
        help="Write gallery.html: every sample's source, edit and reference thumbnails with its scores, "
             "filterable by category and status (one self-contained file).")
    seed: int = option(0, result=True, help="Base seed; each sample's seed derives from (seed, sample id).")
    overwrite: bool = option(
        False, result=False,
        help="Discard what output_dir holds (edits, records, results) and start over, instead of resuming a run "
             "with the same settings.")
    trust_remote_code: bool = option(
        False, result=False,
        help="Let model repositories run their own Python code. Off: only library classes load.")
    process_group_timeout: int = option(
        1800, result=False, help="Seconds a rank waits at a barrier or gather before the run fails (also while its "
                                 "node's main process downloads the weights, on a model's first run).")
    verbose: bool = option(
        False, result=False,
        help="Also show the model libraries' own progress bars and info logs (off: only the harness's "
             "samples-done bars and its log).")

    def __post_init__(self):
        if not self.output_dir.strip():
            raise ConfigError("`output_dir` is empty: name the folder for edits, results and reports.")
        _check_positive("process_group_timeout", self.process_group_timeout)
        if self.process_group_timeout > MAX_PROCESS_GROUP_TIMEOUT:
            raise ConfigError(f"`process_group_timeout` must be at most {MAX_PROCESS_GROUP_TIMEOUT} seconds (30 "
                              f"days), got {self.process_group_timeout}.")


@dataclass
class SweepConfig:
    # Not in any fingerprint: each variant is a run of its own, fingerprinted by its own settings.
    sweep: Any = option(
        None, result=False, path="always",
        help="Score several variants of the editor in one job, each a run of its own in output_dir/<variant>/: a "
             "folder of LoRA adapters (each subfolder or .safetensors file one variant, in natural order, after "
             "`base`, the recipe's editor without an adapter), or NAME=PATH,... (adapters; PATH none = no "
             "adapter), or in a recipe a list of {name: ..., <editor keys>: ...}. The first variant is the "
             "reference of the sweep report.")
    sweep_base: bool = option(
        True, result=False, help="With a folder `sweep`: score the recipe's editor without an adapter first, as "
                                 "variant `base` (the reference).")
    sweep_glob: Optional[str] = option(
        None, result=False, help="With a folder `sweep`: only the checkpoints whose folder name matches this shell "
                                 "pattern (e.g. 'checkpoint-*000').")
    sweep_every: Optional[int] = option(
        None, result=False, help="With a folder `sweep`: only the checkpoints whose step (N of a "
                                 "checkpoint-N name) is a multiple of K.")
    sweep_last: Optional[int] = option(
        None, result=False, help="With a folder `sweep`: only the last N checkpoints (by step), after "
                                 "`sweep_glob` and `sweep_every`.")

    def __post_init__(self):
        for key in ("sweep_every", "sweep_last"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"`{key}` must be an integer >= 1, got {value!r}.")
        if isinstance(self.sweep, str) and not self.sweep.strip():
            self.sweep = None
        if self.sweep is not None and not isinstance(self.sweep, (str, list)):
            raise ConfigError(f"`sweep` must be a folder, NAME=PATH,... or a list of variants, got {self.sweep!r}.")


# --- experiment trackers (accelerate's tracking API: bench_lib.tracking) ---------------------------------


@dataclass
class TrackingConfig:
    # Not in any fingerprint: where results are also sent changes no result.
    log_with: str = option(
        "", result=False,
        help="Also log each run's headline metrics (with CIs), its per-category table and a table of sample images "
             "to experiment trackers through accelerate's tracking API, comma-separated: tensorboard, wandb, "
             "trackio, mlflow, ... (any tracker accelerate knows and whose package is installed). Each run logs at "
             "a training step: the Python API's `step`, a sweep variant's (checkpoint-500: 500), else 0. Called "
             "with an Accelerator that has trackers, the run logs into those instead.")
    tracker_project: str = option(
        "edit-bench", result=False,
        help="The trackers' project (run) name: a plain name (no path separators, not . or ..).")
    logging_dir: str = option(
        "", result=False, path="always",
        help="Folder of the trackers' local files (tensorboard's event files, ...); default <output_dir>/logs. It "
             "may lie outside output_dir.")

    def names(self) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in self.log_with.split(",") if name.strip()))

    def logging_folder(self, output_dir: str) -> str:
        return self.logging_dir or str(Path(output_dir) / "logs")

    def __post_init__(self):
        if not self.tracker_project.strip():
            raise ConfigError("`tracker_project` is empty: name the trackers' project.")
        name = self.tracker_project
        if "/" in name or "\\" in name or name.strip() in (".", "..") or "\0" in name or Path(name).is_absolute():
            # trackers make a folder of this name under logging_dir: a path would write outside it
            raise ConfigError(f"`tracker_project` must be a plain name (no path separators, not . or ..), got "
                              f"{name!r}.")


CORE_SECTIONS = {"data": DataConfig, "editor": EditorConfig, "judge": JudgeConfig, "run": RunConfig,
                 "sweep": SweepConfig, "tracking": TrackingConfig}


@dataclass
class BenchmarkConfig:
    data: DataConfig
    editor: EditorConfig
    editor_backend: Any  # the chosen editor backend's own section (its `Config`)
    judge: JudgeConfig
    judge_backend: Any  # the chosen judge backend's own section
    run: RunConfig
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    recipe: Optional[str] = None  # the YAML file the values came from, for the log and report.json
    ignored: tuple[str, ...] = ()  # keys set for a backend this run does not use (logged once)

    def sections(self) -> dict[str, Any]:
        return {"data": self.data, "editor": self.editor, f"editor:{self.editor.editor}": self.editor_backend,
                "judge": self.judge, f"judge:{self.judge.judge}": self.judge_backend, "run": self.run,
                "sweep": self.sweep, "tracking": self.tracking}

    def to_dict(self) -> dict[str, Any]:
        flat = {}
        for part in self.sections().values():
            flat.update(dataclasses.asdict(part))
        return flat


def _check_positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"`{key}` must be >= 1, got {value}.")


def suggest(word: str, known) -> str:
    """The closest of `known` as " (did you mean 'x'?)", or "" when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- values -------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _scalar(text: str) -> Any:
    """A command-line `k=v` value: a number, true/false, null, or else the text exactly as given."""
    word = text.strip()
    if _NUMBER.fullmatch(word):
        return int(word) if re.fullmatch(r"[+-]?\d+", word) else float(word)
    return {"true": True, "false": False, "null": None}.get(word.lower(), text)


def parse_mapping(text: str) -> dict:
    """`{"a": "b"}` (JSON) or `a=b,c=d`. In the second form values are numbers, true/false, null or text
    kept exactly (`negative_prompt= ` is one space); use JSON for text with commas."""
    if text.strip().startswith("{"):
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ConfigError(f"invalid JSON object {text[:200]!r}: {err}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"expected a JSON object, got {text[:200]!r}")
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


def convert(key: str, value: Any, tp: Any) -> Any:
    """Check or convert one value (from YAML, or a string from the command line) to the field's type."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        tp = args[0]
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            shown = str(value) if isinstance(value, str) else repr(value)
            raise ConfigError(f"`{key}` must be one of {list(choices)}, got {value!r}{suggest(shown, choices)}.")
        return value
    if tp is Any:  # `sweep`: text from the command line, a list from a recipe (checked by its section)
        return value
    if tp is dict:
        if isinstance(value, str):
            return parse_mapping(value)
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
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"`{key}` must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"`{key}` must be an integer, got {value!r}")
        if tp is float and not math.isfinite(converted):
            raise ConfigError(f"`{key}` must be a finite number, got {value!r}")
        return converted
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"`{key}` must be a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {tp} for {key}")


# --- recipes ---------------------------------------------------------------------------------------------


def load_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe {str(path)!r} does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {str(path)!r} must be a mapping of config keys.")
    return values
