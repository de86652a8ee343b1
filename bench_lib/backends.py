"""The backend contract: one small abstract base per role (editor, judge) and the decorators that register a
backend under its name in bench_lib.registry (where the config, the runner and provenance look names up).

A backend owns its whole contract, so adding one is one module plus its line in bench_lib.registry's table (or,
outside this package, an entry point: see bench_lib.registry), a recipe and a test:

- `Config`: a dataclass of its own config keys (declared with `config.option`, each classified as changing
  results or not; the run's fingerprint is built from that classification);
- `preflight(cfg, bench)`: what can be checked without a model library (names, paths), at once;
- `check(cfg, bench)`: everything that can be checked before any weights load (exit code 2, not a lost
  edit stage);
- `download(cfg, bench)`: the weights into the node's cache before the edit stage (one process per node);
- `provenance(cfg)`: where its model came from (source, resolved revision, adapter hashes), recorded in
  run.json and report.json;
- `display_name(cfg)`: how reports name it;
- the work itself (an editor's `edit`; a judge's `generate` and `read_scales`) and `close()`, which frees every
  reference to model weights.

Nothing here imports a model library: the command line parses (and `--help` prints) without torch.
Backends register where they are defined (`@register_editor("name")`); a built-in one's module is imported the
first time its name is looked up (the registry's table names it), so a run imports only the backends it uses
beyond their config sections.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from .config import section_fingerprint
from .registry import BASELINES, EDITORS, JUDGES

if TYPE_CHECKING:
    from PIL import Image

    from .config import BenchmarkConfig
    from .data import Sample
    from .judging import Completion, JudgeRequest, Prompt, ScaleReader


@dataclass
class NoOptions:
    """The config section of a backend that has no keys of its own."""


@dataclass
class EditResult:
    image: Image.Image
    flags: list[str] = field(default_factory=list)  # suspicious output, e.g. "non_finite" (NaN/inf pixels)
    info: dict[str, Any] = field(default_factory=dict)  # per-sample facts kept in the edit record (a file's digest)


class Backend(ABC):
    name: ClassVar[str] = ""  # set when it is registered
    Config: ClassVar[type] = NoOptions
    description: ClassVar[str] = ""  # one line for `--help` and the README (else its docstring's first line)

    @classmethod
    def check_registration(cls) -> None:
        """Called when the class is registered: its config section must be a dataclass whose every field says
        whether it changes results."""
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass")
        unclassified = [f.name for f in dataclasses.fields(cls.Config) if "result" not in f.metadata]
        if unclassified:
            raise TypeError(f"{cls.__name__}.Config fields {unclassified} do not say whether they change results "
                            "(declare them with bench_lib.config.option)")

    @classmethod
    def preflight(cls, cfg: Any, bench: BenchmarkConfig) -> None:
        """Checks that import no model library (names and paths): they run on every process before torch is
        imported, so a typo answers at once. Raise `ConfigError`."""

    @classmethod
    def check(cls, cfg: Any, bench: BenchmarkConfig) -> None:
        """Before any weights load: raise `ConfigError` for anything that would fail later (`bench`: the whole
        run's config, for checks that involve other sections)."""

    @classmethod
    def download(cls, cfg: Any, bench: BenchmarkConfig, *, done: set) -> None:
        """After `check`, before the edit stage, on each node's local main process only: fetch the model's weights
        into the node's cache (offline: check they are there), so that no rank downloads inside a stage while
        the others wait. `done`: what this step has fetched already (a sweep's variants share a base model):
        skip those, add yours. Raise `ConfigError` when they cannot be had."""

    @classmethod
    def fingerprint(cls, cfg: Any, bench: BenchmarkConfig) -> dict[str, Any]:
        """What of this backend's config the results depend on (by default: the fields that say so)."""
        return section_fingerprint(cfg)

    @classmethod
    def provenance(cls, cfg: Any) -> dict[str, Any]:
        """Where the model came from (main process, when an attempt starts)."""
        return {"id": cls.display_name(cfg)}

    @classmethod
    def display_name(cls, cfg: Any) -> str:
        return cls.name

    def close(self) -> None:
        """Release every reference to model weights (the next model needs the memory)."""


class Editor(Backend):
    """Turns (sample, source image, seed) into an edited image. One sample per call: the per-batch barrier
    is the runner's, and batching inside a pipeline can change results (`QwenImageEditPipeline` sizes every
    image of a call by the first)."""

    needs_model: ClassVar[bool] = True  # False: costs no edit time (baselines, precomputed edits)

    def __init__(self, cfg: Any, *, device: Any, trust_remote_code: bool = False):
        self.cfg = cfg

    @abstractmethod
    def edit(self, sample: Sample, source: Image.Image, *, seed: int) -> EditResult:
        """The edit of `source` by the sample's instruction. For a sample with several source images (an editor
        whose `max_source_images` allows them) `source` is the list of them, in the data's order."""

    def max_source_images(self) -> int:
        """How many source images one edit takes. A sample with more is `edit_failed` with that reason, never
        edited from its first image alone. Default 1."""
        return 1

    @classmethod
    def stale_edits(cls, cfg: Any, samples: list[Sample], records: dict[str, dict]) -> dict[str, str]:
        """Main process, when a run resumes: sample id -> why, for each kept ok edit (`records`: the latest edit
        record per id) that no longer stands for what this editor would give now (an edit read from a file that
        has changed since). They are edited and judged again."""
        return {}

    def loaded_problem(self, recorded: dict[str, Any]) -> Optional[str]:
        """Why the weights loaded now are not the ones `recorded` (this backend's fingerprint as the run recorded
        it when it was planned) describes, or None. The edit stage asks after each load or switch and edits
        nothing with a mismatch: an adapter saved again in place between planning and loading would otherwise
        be recorded under the old hash. By default nothing is identified by content at load time."""
        return None

    @classmethod
    def wrap(cls, cfg: Any, model: Any, *, device: Any) -> Editor:
        """An editor around a model object the caller already has in memory (the Python API's `pipeline`), used as
        it is: never loaded, moved, freed or changed; `close()` hands it back in the state it was found in. By
        default a backend cannot: ConfigError."""
        from .config import ConfigError

        raise ConfigError(f"editor {cls.name!r} cannot use a model object in memory (`pipeline`); use the "
                          "diffusers editor.")

    def in_memory(self) -> Optional[dict[str, Any]]:
        """For an editor made by `wrap`: what the run records about the object (its fingerprint entry and
        provenance); None for an editor that loaded its own model."""
        return None

    def switch(self, cfg: Any) -> bool:
        """Become the editor `cfg` describes without reloading (a sweep's next variant: another adapter on the
        same base), set `self.cfg` and return True; or return False when that needs a new load (the runner then
        closes this editor and loads one)."""
        return False


class Judge(Backend):
    """A transport to a judge model: it generates text, or reads the next-token distribution over a scale's
    answers, for the requests it is given (bench_lib.judging). It never sees a protocol, and it does not parse or
    ask again: bench_lib.judges.policy does that the same way for every backend. `judge`: the run's common judge
    settings (`JudgeConfig`: mode, batch size, pixel cap)."""

    def __init__(self, cfg: Any, *, judge: Any, device: Any, device_map: Optional[dict] = None,
                 trust_remote_code: bool = False):
        self.cfg = cfg
        self.judge_cfg = judge

    @property
    def min_scale_mass(self) -> float:
        """Logits mode: a reading with less probability than this on the scale's answers is off-format (asked
        again, then judge_failed). No probability at all is off-format whatever this says."""
        return 0.0

    @classmethod
    def request_budget(cls, cfg: Any) -> Optional[int]:
        """The most requests the whole run may send the judge (a paid API's budget), or None: no limit. The judge
        stage gives each process its share (`set_budget`); a backend that reaches it raises
        `bench_lib.judging.JudgeBudgetReached`."""
        return None

    def set_budget(self, requests: int) -> None:
        """This process's share of `request_budget`."""

    def start_stage(self) -> None:
        """Called at the start of every judge stage, also on a judge kept loaded from an earlier run (the Python
        API's `keep_judge`): forget what an earlier stage left (answers or failures kept, requests counted), so
        each run's judging, budget and `usage_counts` are its own."""

    def usage_counts(self) -> dict[str, int]:
        """What this process's judge sent and was charged (requests, retries, tokens), for the report; {}: nothing
        to say (an in-process model)."""
        return {}

    @abstractmethod
    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        """Generate mode: greedy completions, one per prompt, in order (the batch is the caller's)."""

    @abstractmethod
    def read_scales(self, requests: list[JudgeRequest]) -> ScaleReader:
        """Logits mode: a reader of these requests' answers (they share their questions: equal `batch_key`)."""


def register_editor(name: str):
    """`@register_editor("name")`: the class is the editor backend `name` (bench_lib.registry.EDITORS)."""
    return EDITORS.decorator(name)


def register_judge(name: str):
    """`@register_judge("name")`: the class is the judge backend `name` (bench_lib.registry.JUDGES)."""
    return JUDGES.decorator(name)


def register_baseline(name: str):
    """`@register_baseline("name")`: the editor is also the sanity baseline `name` (`baselines`)."""
    return BASELINES.decorator(name)
