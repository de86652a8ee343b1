"""`diffusers`: any diffusers pipeline called as `pipe(image=..., prompt=..., generator=..., **editor_kwargs)`:
Qwen-Image-Edit (-2509, -2511), FLUX.1 Kontext, FLUX.2, or a fine-tuned folder of one of them; optionally with
a LoRA adapter, a scheduler override (few-step adapters), and diffusers' own speed options.

Model libraries are imported inside the functions that need them: the command line parses without them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..backends import Editor, EditResult, register_editor
from ..config import ConfigError, Dtype, option, result_fields
from ..models import check_model_name, resolve_model
from ..torch_utils import free_memory, torch_dtype

logger = logging.getLogger(__name__)

RESERVED_KWARGS = ("image", "prompt", "generator", "output_type", "return_dict")
CACHE_TYPES = {"FirstBlockCache": "FirstBlockCacheConfig", "TaylorSeerCache": "TaylorSeerCacheConfig",
               "MagCache": "MagCacheConfig"}
ADAPTER = "edit-bench"  # the adapter name the harness loads a LoRA under
# Pipelines whose `image=` takes a list of images as the sources of one edit (in other pipelines a list is a
# batch): diffusers' QwenImageEditPlusPipeline (Qwen-Image-Edit-2509/2511), which sets no limit on their number.
SEVERAL_SOURCES = ("QwenImageEditPlusPipeline",)


@dataclass
class DiffusersConfig:
    editor_model: str = option(
        "", result=True, path="local",
        help="Diffusers pipeline: hub id or local folder (a save_pretrained pipeline, e.g. a fine-tuned "
             "checkpoint); 'tiny:<name>' builds a tiny one.")
    editor_revision: Optional[str] = option(None, result=True, help="Hub revision of the editor.")
    editor_dtype: Dtype = option("bfloat16", result=True, help="Dtype of the editor's weights and compute.")
    editor_kwargs: dict = option(
        default_factory=dict, result=True,
        help="Extra keyword arguments for every pipeline call (JSON or k=v,...). On the command line they update "
             "the recipe's mapping; k=null removes a key.")
    editor_scheduler: dict = option(
        default_factory=dict, result=True,
        help="Overrides of the pipeline's scheduler config (k=v,... or JSON), applied with from_config: the "
             "scheduler settings a few-step adapter's card requires.")
    match_source_size: bool = option(
        False, result=True,
        help="Pass each source's width and height to the call, so the edit keeps the source's aspect ratio where "
             "the pipeline would otherwise use a fixed default (FLUX.1 Kontext: 1024x1024 at any input); the "
             "pipeline still scales it to its own area. Off: editor_kwargs decide.")
    lora: Optional[str] = option(
        None, result=True, path="local",
        help="LoRA adapter loaded with diffusers' load_lora_weights: a hub id, a folder or a .safetensors file. "
             "Its content hash is part of the fingerprint.")
    lora_weight_name: Optional[str] = option(
        None, result=True, help="The adapter file inside `lora` (a hub repository or folder holding several).")
    lora_scale: float = option(1.0, result=True, help="The adapter's weight (set_adapters).")
    editor_transformer: Optional[str] = option(
        None, result=True, path="always",
        help="A local diffusers model folder (config.json + .safetensors weights) loaded as the pipeline's "
             "transformer in place of editor_model's own: a full fine-tune's checkpoint (checkpoint-500/transformer). "
             "Its content hash is part of the fingerprint.")
    attention_backend: Optional[str] = option(
        None, result=True,
        help="Attention backend of the transformer (diffusers' set_attention_backend: native, flash, "
             "_native_cudnn, sage, ...). Numerics may differ slightly: recorded and part of the fingerprint.")
    compile: Literal["none", "regional", "full"] = option(
        "none", result=True,
        help="torch.compile the transformer: regional = compile_repeated_blocks (one block compiled, reused by "
             "all), full = the whole transformer. Off by default.")
    cache: dict = option(
        default_factory=dict, result=True,
        help='A diffusers cache on the transformer (enable_cache), as JSON: {"type": "FirstBlockCache", '
             '"threshold": 0.05}; types FirstBlockCache, TaylorSeerCache, MagCache with their parameters. It skips '
             "computation between steps and changes pixels. Off by default.")

    def __post_init__(self):
        if not self.editor_model:
            raise ConfigError("`editor_model` is required (a diffusers pipeline: hub id or folder).")
        reserved = set(RESERVED_KWARGS) & set(self.editor_kwargs)
        if reserved:
            raise ConfigError(f"`editor_kwargs` may not set {sorted(reserved)}: the harness sets them "
                              "(one image, prompt and seeded generator per call; its own output type).")
        check_call_values(self.editor_kwargs)
        if not math.isfinite(self.lora_scale):
            raise ConfigError(f"`lora_scale` must be a finite number, got {self.lora_scale}.")
        if self.lora_weight_name and not self.lora:
            raise ConfigError("`lora_weight_name` is set but `lora` is not.")
        if isinstance(self.editor_transformer, str) and not self.editor_transformer.strip():
            self.editor_transformer = None
        if self.match_source_size and {"height", "width"} & set(self.editor_kwargs):
            raise ConfigError("`match_source_size` and `editor_kwargs` height/width both set the size: keep one.")
        if self.cache and self.cache.get("type") not in CACHE_TYPES:
            raise ConfigError(f"`cache` needs a \"type\" of {sorted(CACHE_TYPES)}, got {self.cache!r}.")


def check_call_values(kwargs: dict) -> None:
    """The values of the pipeline-call arguments every diffusers editing pipeline shares, checked before any
    model loads: with `num_inference_steps: 0`, say, every sample would otherwise fail one by one after the
    model loaded. (Sizes that are not a multiple of the latent grid are the pipeline's to round: it does so
    with a warning.)"""

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    rules = {
        "num_inference_steps": (lambda v: integer(v) and v >= 1, "an integer >= 1"),
        "height": (lambda v: v is None or (integer(v) and v >= 1), "an integer >= 1 (pixels)"),
        "width": (lambda v: v is None or (integer(v) and v >= 1), "an integer >= 1 (pixels)"),
        "max_area": (lambda v: integer(v) and v >= 1, "an integer >= 1 (pixels)"),
        "max_sequence_length": (lambda v: integer(v) and v >= 1, "an integer >= 1"),
        "num_images_per_prompt": (lambda v: v == 1 and integer(v), "1 (the harness keeps one edit per sample)"),
        "true_cfg_scale": (lambda v: number(v) and v >= 0, "a finite number >= 0"),
        "guidance_scale": (lambda v: v is None or (number(v) and v >= 0), "a finite number >= 0"),
        "strength": (lambda v: number(v) and 0 < v <= 1, "a number in (0, 1]"),
        "negative_prompt": (lambda v: v is None or isinstance(v, str), "text"),
    }
    for key, (ok, expected) in rules.items():
        if key in kwargs and not ok(kwargs[key]):
            raise ConfigError(f"`editor_kwargs.{key}` must be {expected}, got {kwargs[key]!r}.")


def add_multimodal_positions(pipe) -> Optional[Callable[[], None]]:
    """Make a Qwen-Image-Edit text encoder see the 3-D (MRoPE) positions of the image tokens.

    diffusers' Qwen-Image-Edit pipelines call the Qwen2.5-VL text encoder without the processor's
    `mm_token_type_ids`; transformers 5 then silently falls back to 1-D text positions and the prompt
    embeddings (and so the edits) are wrong. A forward pre-hook on the text encoder fills the ids in from
    `input_ids` whenever the caller left them out; it does nothing once diffusers passes them itself. Returns
    the hook's remover, or None when `pipe` has no such text encoder.
    """
    text_encoder = getattr(pipe, "text_encoder", None)
    if text_encoder is None or "mm_token_type_ids" not in inspect.signature(text_encoder.forward).parameters:
        return None
    config = text_encoder.config

    def fill_token_types(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("mm_token_type_ids") is None and input_ids is not None:
            # What the processor computes: 1 for image tokens, 2 for video tokens, 0 for text.
            token_types = (input_ids == config.image_token_id).int() + 2 * (input_ids == config.video_token_id).int()
            kwargs["mm_token_type_ids"] = token_types
        return args, kwargs

    return text_encoder.register_forward_pre_hook(fill_token_types, with_kwargs=True).remove


@register_editor("diffusers")
class DiffusersEditor(Editor):
    """One sample per call: `QwenImageEditPipeline` sizes every image of a call by the first one and
    `QwenImageEditPlusPipeline` refuses batches, so batching would change results or fail."""

    description = "any diffusers editing pipeline that takes image= and prompt=, with LoRA adapters and speed options"

    Config = DiffusersConfig

    # --- before any weights load ------------------------------------------------------------------

    @classmethod
    def preflight(cls, cfg: DiffusersConfig, bench) -> None:
        """The model and the adapter can be found: a local path exists, a hub id is usable (no library needed)."""
        from ..models import hub_problem, looks_local

        check_model_name("editor_model", cfg.editor_model, revision=cfg.editor_revision, marker="model_index.json",
                         resolve=False)
        if cfg.lora:
            path = Path(cfg.lora).expanduser()
            check_safetensors(path.name if path.is_file() else cfg.lora_weight_name, cfg)
        if cfg.lora and not Path(cfg.lora).expanduser().exists():
            if looks_local(cfg.lora) or cfg.lora.count("/") != 1:
                raise ConfigError(f"`lora` {cfg.lora!r}: no such file or folder.")
            problem = hub_problem(cfg.lora, repo_type="model", revision=None, key="lora",
                                  filename=cfg.lora_weight_name or "pytorch_lora_weights.safetensors")
            if problem:
                raise ConfigError(problem)
        if cfg.editor_transformer:
            transformer_files(cfg.editor_transformer)

    @classmethod
    def check(cls, cfg: DiffusersConfig, bench) -> None:
        """The pipeline exists and accepts every `editor_kwargs` key; the scheduler overrides, the adapter and
        the speed options fit it. Downloads only config files (and the adapter)."""
        pipeline_cls, location = cls._pipeline_class(cfg)
        if pipeline_cls is not None:
            cls._check_call(pipeline_cls, cfg)
        if cfg.editor_scheduler:
            cls._check_scheduler(cfg, location)
        if cfg.editor_transformer:
            check_transformer(cfg, location)
        if cfg.lora:
            check_lora(cfg, pipeline_cls, location)
        if cfg.attention_backend:
            check_attention_backend(cfg.attention_backend)
        if cfg.cache:
            cache_config(cfg.cache)
            check_cache_support(pipeline_cls)
        if cfg.compile == "regional":
            transformer_cls = _component_class(location, cfg, "transformer")
            if transformer_cls is not None and not getattr(transformer_cls, "_repeated_blocks", None):
                raise ConfigError(f"`compile: regional` needs a transformer with repeated blocks; "
                                  f"{transformer_cls.__name__} declares none (use compile: full).")

    @classmethod
    def download(cls, cfg: DiffusersConfig, bench, *, done: set) -> None:
        from ..models import download_model

        if ("pipeline", cfg.editor_model, cfg.editor_revision) in done:
            return  # another variant's: adapters ride on the same base (`check` fetched the adapter files)
        done.add(("pipeline", cfg.editor_model, cfg.editor_revision))
        download_model("editor_model", cfg.editor_model, revision=cfg.editor_revision, pipeline=True,
                       trust_remote_code=bool(bench and bench.run.trust_remote_code))

    @staticmethod
    def _pipeline_class(cfg: DiffusersConfig):
        import diffusers

        location = check_model_name("editor_model", cfg.editor_model, revision=cfg.editor_revision,
                                    marker="model_index.json")
        try:
            index = diffusers.DiffusionPipeline.load_config(location, revision=cfg.editor_revision)
        except (OSError, ValueError) as err:
            raise ConfigError(f"`editor_model` {cfg.editor_model!r} is not a diffusers pipeline (no usable "
                              f"model_index.json): {str(err).splitlines()[0][:300]}") from None
        return getattr(diffusers, index.get("_class_name", ""), None), location  # None: a custom class

    @staticmethod
    def _check_call(pipeline_cls, cfg: DiffusersConfig) -> None:
        params = inspect.signature(pipeline_cls.__call__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        missing = [name for name in ("image", "prompt", "generator") if name not in params]
        unknown = sorted(set(cfg.editor_kwargs) - set(params))
        if missing or unknown:
            raise ConfigError(
                f"{pipeline_cls.__name__} " + (f"does not take {missing}; " if missing else "")
                + (f"has no argument(s) {unknown} from `editor_kwargs`; " if unknown else "")
                + f"it takes: {sorted(p for p in params if p != 'self')}")

    @staticmethod
    def _check_scheduler(cfg: DiffusersConfig, location: str) -> None:
        scheduler_cls = _component_class(location, cfg, "scheduler")
        if scheduler_cls is None:
            raise ConfigError(f"`editor_scheduler` is set, but {cfg.editor_model!r} has no scheduler to override.")
        config = scheduler_cls.load_config(location, subfolder="scheduler", revision=cfg.editor_revision)
        unknown = sorted(set(cfg.editor_scheduler) - set(config) - set(inspect.signature(scheduler_cls).parameters))
        if unknown:
            raise ConfigError(f"`editor_scheduler` keys {unknown} are not settings of {scheduler_cls.__name__}; "
                              f"it has: {sorted(k for k in config if not k.startswith('_'))}")

    @classmethod
    def fingerprint(cls, cfg: DiffusersConfig, bench) -> dict[str, Any]:
        out = result_fields(cfg)
        if cfg.lora:  # by content, not by where it lies: a retrained adapter saved in its place is another one
            del out["lora"], out["lora_weight_name"]
            out["lora_sha256"] = adapter_sha256(cfg)
        del out["editor_transformer"]  # absent unless set: the fingerprints of runs without one stay as they were
        if cfg.editor_transformer:  # by content too: a checkpoint saved again in place is another model
            out["editor_transformer_sha256"] = transformer_sha256(cfg.editor_transformer)
        return out

    @classmethod
    def provenance(cls, cfg: DiffusersConfig) -> dict[str, Any]:
        from ..provenance import model_source

        out = model_source(cfg.editor_model, cfg.editor_revision, "model_index.json")
        if cfg.lora:
            out["lora"] = {"id": cfg.lora, "weight_name": cfg.lora_weight_name, "scale": cfg.lora_scale,
                           "file": str(adapter_file(cfg)), "sha256": adapter_sha256(cfg)}
        if cfg.editor_transformer:
            out["transformer"] = {"path": cfg.editor_transformer, "sha256": transformer_sha256(cfg.editor_transformer)}
        out["speed_options"] = {"attention_backend": cfg.attention_backend, "compile": cfg.compile,
                                "cache": cfg.cache or None}
        out["scheduler_overrides"] = cfg.editor_scheduler or None
        return out

    @classmethod
    def display_name(cls, cfg: DiffusersConfig) -> str:
        lora = f" + LoRA {cfg.lora} ({cfg.lora_scale:g})" if cfg.lora else ""
        transformer = f" with transformer {cfg.editor_transformer}" if cfg.editor_transformer else ""
        return f"{cfg.editor_model}{transformer}{lora}"

    # --- the pipeline -------------------------------------------------------------------------------

    def __init__(self, cfg: DiffusersConfig, *, device, trust_remote_code: bool = False):
        from diffusers import DiffusionPipeline

        super().__init__(cfg, device=device, trust_remote_code=trust_remote_code)
        components, self._transformer_digests = {}, None
        if cfg.editor_transformer:  # hashed just before and just after loading: see `loaded_problem`
            before = transformer_sha256(cfg.editor_transformer)
            components["transformer"] = transformer_class(cfg.editor_transformer).from_pretrained(
                cfg.editor_transformer, dtype=torch_dtype(cfg.editor_dtype), use_safetensors=True)
            self._transformer_digests = (before, transformer_sha256(cfg.editor_transformer))
        pipe = DiffusionPipeline.from_pretrained(
            resolve_model(cfg.editor_model),
            revision=cfg.editor_revision,
            dtype=torch_dtype(cfg.editor_dtype),
            use_safetensors=True,  # never unpickle weights
            trust_remote_code=trust_remote_code,
            **components,
        )
        self._setup(pipe, device)

    @classmethod
    def from_pipe(cls, cfg: DiffusersConfig, pipe, *, device) -> DiffusersEditor:
        """An editor around a pipeline built elsewhere (scripts/bench_edit.py: random real-size weights)."""
        editor = cls.__new__(cls)
        Editor.__init__(editor, cfg, device=device)
        editor._transformer_digests = None
        editor._setup(pipe, device)
        return editor

    @classmethod
    def wrap(cls, cfg: DiffusersConfig, model, *, device) -> DiffusersEditor:
        """An editor around the caller's pipeline (a training script's, with or without an active adapter),
        used where it is (its device and dtype, its adapters as they are set): it is never moved, freed or
        changed. While it edits, every module of it is in eval mode (no dropout); `close()` restores each
        module's mode and each parameter's `requires_grad` as they were. Settings that would change the caller's
        pipeline (`lora`, `editor_scheduler`, the speed options) are refused."""
        import uuid

        changing = [key for key, unset in (("lora", None), ("editor_scheduler", {}), ("attention_backend", None),
                                           ("compile", "none"), ("cache", {})) if getattr(cfg, key) != unset]
        if changing:
            raise ConfigError(f"{', '.join(f'`{k}`' for k in changing)} would change the pipeline passed in: set "
                              "them up on the pipeline yourself (its active adapters are used as they are).")
        if not callable(model) or not hasattr(model, "components"):
            raise ConfigError(f"`pipeline` must be a diffusers pipeline, got {type(model).__name__}.")
        editor = cls.__new__(cls)
        Editor.__init__(editor, cfg, device=device)
        modules = {name: c for name, c in model.components.items() if hasattr(c, "named_parameters")}
        editor._borrowed = {
            "modes": [(m, m.training) for c in modules.values() for m in c.modules()],
            "grads": [(p, p.requires_grad) for c in modules.values() for p in c.parameters()],
            "progress_bar": dict(getattr(model, "_progress_bar_config", {})) if
            hasattr(model, "_progress_bar_config") else None,
        }
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for c in modules.values() for p in c.parameters()})
        devices = sorted({str(p.device) for c in modules.values() for p in c.parameters()})
        active = model.get_active_adapters() if hasattr(model, "get_active_adapters") else []
        editor._identity = {"object": f"in memory {type(model).__name__}, call {uuid.uuid4().hex}", "dtypes": dtypes,
                            "devices": devices, "active_adapters": list(active)}
        for component in modules.values():
            component.eval()
        editor.pipe = model
        editor.pipe.set_progress_bar_config(disable=True)
        editor._remove_hook = add_multimodal_positions(model)
        editor._adapter_digests = None
        editor.kwargs = dict(cfg.editor_kwargs)
        if "output_type" in inspect.signature(model.__call__).parameters:
            editor.kwargs["output_type"] = "np"
        import torch

        editor._generator_device = torch.device("cpu")
        logger.info("editor: the %s passed in (%s, on %s, adapters %s)", type(model).__name__, ", ".join(dtypes),
                    ", ".join(devices), list(active) or "none")
        return editor

    def in_memory(self) -> Optional[dict[str, Any]]:
        """The wrapped pipeline's record: a fingerprint entry unique to this call (weights in memory have no
        identity a later run could check, so a folder evaluated from memory is never resumed by another call),
        and its dtypes, devices and active adapters."""
        return getattr(self, "_identity", None)

    def _setup(self, pipe, device) -> None:
        import torch

        cfg = self.cfg
        self.pipe = pipe
        if cfg.editor_scheduler:
            scheduler = self.pipe.scheduler
            self.pipe.scheduler = type(scheduler).from_config({**scheduler.config, **cfg.editor_scheduler})
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self._remove_hook = add_multimodal_positions(self.pipe)
        self._adapter_digests: Optional[tuple[str, str]] = None
        if cfg.lora:
            self._load_adapter(cfg)
            self.pipe.set_adapters([ADAPTER], adapter_weights=[cfg.lora_scale])
        apply_speed_options(self.pipe, cfg)
        self.kwargs = dict(cfg.editor_kwargs)
        # Float output lets us see NaN/inf pixels (the fp16 black-image failure) before they become bytes;
        # converting it ourselves with the pipeline's own numpy_to_pil gives the same pixels as "pil".
        if "output_type" in inspect.signature(self.pipe.__call__).parameters:
            self.kwargs["output_type"] = "np"
        self._generator_device = torch.device("cpu")
        logger.info("editor %s loaded as %s on %s", self.display_name(cfg), type(self.pipe).__name__, device)

    def max_source_images(self) -> int:
        return sys.maxsize if type(self.pipe).__name__ in SEVERAL_SOURCES else 1

    def edit(self, sample, source, *, seed: int) -> EditResult:
        import numpy as np
        import torch

        # A CPU generator gives the same initial noise on every device type and GPU count.
        generator = torch.Generator(device=self._generator_device).manual_seed(seed)
        first = source[0] if isinstance(source, list) else source  # several sources: the first sets the size
        size = {"width": first.width, "height": first.height} if self.cfg.match_source_size else {}
        self._reset_cache()  # a call that died mid-way (an OOM) left its cached steps behind
        try:
            with torch.inference_mode():
                images = self.pipe(image=source, prompt=sample.instruction, generator=generator, **size,
                                   **self.kwargs).images
        finally:
            self._reset_cache()  # and frees them now, not at the next call
        if not isinstance(images, np.ndarray):
            return EditResult(image=images[0])
        array = images[:1]
        if np.isfinite(array).all():
            return EditResult(image=self.pipe.numpy_to_pil(array)[0])
        clean = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
        return EditResult(image=self.pipe.numpy_to_pil(clean)[0], flags=["non_finite"])

    def _load_adapter(self, cfg: DiffusersConfig) -> None:
        """Load the adapter's file (safetensors only) under the harness's adapter name, hashing the file just before
        and just after: `loaded_problem` compares both with what the run recorded."""
        file = adapter_file(cfg)
        before = adapter_digest(file)
        config = peft_config_file(file)
        if config is None:
            self.pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=ADAPTER,
                                        use_safetensors=True)
        else:  # PEFT's own format: its keys name the wrapped model, its scale is in adapter_config.json
            state_dict, metadata = read_peft_adapter(file, config)
            self.pipe.transformer.load_lora_adapter(state_dict, prefix=None, adapter_name=ADAPTER, metadata=metadata,
                                                    _pipeline=self.pipe)
        self._adapter_digests = (before, adapter_digest(file))

    def loaded_problem(self, recorded: dict[str, Any]) -> Optional[str]:
        """The adapter loaded must be the one the fingerprint recorded (hashed when the run was planned): a
        training job that saved it again in place since then would have its new weights scored under the old
        hash."""
        if self.cfg.editor_transformer and self._transformer_digests is not None:
            expected = recorded.get("editor_transformer_sha256")
            before, after = self._transformer_digests
            if not before == after == expected:
                return (f"transformer {self.cfg.editor_transformer!r} changed after this run was planned: the run "
                        f"recorded sha256 {expected}, the loaded one has {after}"
                        + ("" if before == after else f" (it changed while loading; {before} before)")
                        + ". Nothing was edited with it; to score the new weights, start a new run (another "
                          "output_dir, or --overwrite).")
        if not self.cfg.lora:
            return None
        expected = recorded.get("lora_sha256")
        before, after = self._adapter_digests
        if before == after == expected:
            return None
        loaded = f"the file loaded has {after}" if before == after else \
            f"it changed while loading ({before} before, {after} after)"
        return (f"adapter {self.cfg.lora!r} changed after this run was planned: the run recorded sha256 {expected}, "
                f"{loaded}. Nothing was edited with it; to score the new weights, start a new run (another "
                "output_dir, or --overwrite).")

    def _reset_cache(self) -> None:
        """Forget a diffusers cache's state (`cache`): diffusers resets it only at the end of a call that
        succeeded, so after one that failed every later call would start from its cached residuals (a shape
        mismatch, or silently other pixels)."""
        if not self.cfg.cache:
            return
        for component in self.pipe.components.values():
            if hasattr(component, "_reset_stateful_cache"):
                component._reset_stateful_cache()

    def switch(self, cfg: DiffusersConfig) -> bool:
        """Another adapter (or none, or another scale) on the same base, in place: the old adapter is deleted and
        the new one loaded under the same name, as a single run loads it, so the edits are bitwise a single run's.
        Never fused into the base weights (repeated bf16 fuse/unfuse would drift them). Any other difference
        (another pipeline, dtype, scheduler, speed option) needs a new load: returns False."""
        if getattr(self, "pipe", None) is None or _without_adapter(cfg) != _without_adapter(self.cfg) \
                or getattr(self, "_borrowed", None) is not None:
            return False
        old = self.cfg
        if (old.lora, old.lora_weight_name) != (cfg.lora, cfg.lora_weight_name):
            if old.lora:
                self.pipe.delete_adapters(ADAPTER)
            self._adapter_digests = None
            if cfg.lora:
                self._load_adapter(cfg)
        if cfg.lora:
            self.pipe.set_adapters([ADAPTER], adapter_weights=[cfg.lora_scale])
        self.cfg = cfg
        logger.info("editor switched to %s", self.display_name(cfg))
        return True

    def close(self) -> None:
        if getattr(self, "pipe", None) is None:
            return
        if self._remove_hook is not None:
            self._remove_hook()
        borrowed = getattr(self, "_borrowed", None)
        if borrowed is not None:  # the caller's pipeline: handed back as it was found, never freed
            for module, training in borrowed["modes"]:
                module.training = training
            for parameter, requires_grad in borrowed["grads"]:
                parameter.requires_grad_(requires_grad)
            if borrowed["progress_bar"] is None:
                self.pipe.__dict__.pop("_progress_bar_config", None)
            else:
                self.pipe._progress_bar_config = borrowed["progress_bar"]
            self.pipe = self._remove_hook = self._borrowed = None
            return
        self.pipe.remove_all_hooks()  # accelerate offload hooks hold references to the modules
        self.pipe = self._remove_hook = None
        free_memory()


# --- speed options ----------------------------------------------------------------------------------


def check_attention_backend(name: str) -> None:
    from diffusers.models import attention_dispatch

    try:
        backend = attention_dispatch.AttentionBackendName(name)
    except ValueError:
        known = sorted(b.value for b in attention_dispatch.AttentionBackendName)
        raise ConfigError(f"`attention_backend` {name!r} is not a diffusers attention backend; "
                          f"known: {known}") from None
    check = getattr(attention_dispatch, "_check_attention_backend_requirements", None)
    if check is not None:
        try:
            check(backend)
        except (RuntimeError, ImportError) as err:
            raise ConfigError(f"`attention_backend` {name!r} cannot run here: {err}") from None


def check_cache_support(pipeline_cls) -> None:
    """diffusers' cache hooks (`enable_cache`) read a state the pipeline opens around each transformer call with
    `transformer.cache_context(...)`; a pipeline whose `__call__` never opens one fails every call with "No cache
    context is set" (diffusers 0.42: FLUX.1 Kontext and FLUX.2 among them). Refused before any model loads."""
    if pipeline_cls is None:
        return  # a custom pipeline class: what its call does is known only when it runs
    try:
        source = inspect.getsource(pipeline_cls.__call__)
    except (OSError, TypeError):
        return
    if "cache_context" not in source:
        raise ConfigError(f"`cache`: {pipeline_cls.__name__} does not run its transformer inside `cache_context`, "
                          f"so every edit with a diffusers cache would fail; remove `cache` for this editor.")


def cache_config(spec: dict):
    """The diffusers cache config object `spec` describes ({"type": ..., **parameters})."""
    import diffusers.hooks

    params = {k: v for k, v in spec.items() if k != "type"}
    cls = getattr(diffusers.hooks, CACHE_TYPES[spec["type"]])
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ConfigError(f"`cache` parameters {unknown} are not parameters of {spec['type']}; it has {sorted(names)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"`cache` {spec!r}: {err}") from None


def apply_speed_options(pipe, cfg: DiffusersConfig) -> None:
    """diffusers' own speed-ups, each off unless asked for (the adapter is already loaded: compile last)."""
    if cfg.attention_backend:
        pipe.transformer.set_attention_backend(cfg.attention_backend)
    if cfg.cache:
        pipe.transformer.enable_cache(cache_config(cfg.cache))
    # A cache's hooks call functions diffusers marks torch.compiler.disable: a full graph can't hold them (every
    # call would fail), so with a cache the compiled graph breaks around them.
    fullgraph = not cfg.cache
    if cfg.compile == "regional":
        pipe.transformer.compile_repeated_blocks(fullgraph=fullgraph)
    elif cfg.compile == "full":
        pipe.transformer.compile(fullgraph=fullgraph)


# --- LoRA ---------------------------------------------------------------------------------------------


def _without_adapter(cfg: DiffusersConfig) -> dict[str, Any]:
    """The settings an adapter switch keeps: everything but the adapter."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("lora", "lora_weight_name", "lora_scale")}


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors(file_name: Optional[str], cfg: DiffusersConfig) -> None:
    """Adapters load from safetensors files only: unpickling a `.bin` can run any code it holds."""
    if file_name and not file_name.endswith(".safetensors"):
        kind = "a pickle checkpoint" if file_name.endswith(PICKLE_SUFFIXES) else "not a .safetensors file"
        raise ConfigError(f"`lora` {cfg.lora!r}: {file_name!r} is {kind}; adapter weights load from safetensors "
                          "only (unpickling can run code). Use the adapter's .safetensors file, or convert it: "
                          "safetensors.torch.save_file(torch.load(FILE, weights_only=True), 'adapter.safetensors').")


def adapter_file(cfg: DiffusersConfig) -> Path:
    """The adapter's weights file on local disk (downloaded from the hub by `check`): a .safetensors file."""
    path = Path(cfg.lora).expanduser()
    check_safetensors(path.name if path.is_file() else cfg.lora_weight_name, cfg)
    if path.is_file():
        return path
    if path.is_dir():
        if cfg.lora_weight_name:
            return path / cfg.lora_weight_name
        files = sorted(path.glob("*.safetensors"))
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not files and pickles:
            check_safetensors(pickles[0], cfg)
        if len(files) != 1:
            raise ConfigError(f"`lora` {cfg.lora!r} holds {len(files)} .safetensors files: name one with "
                              "`lora_weight_name`.")
        return files[0]
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(cfg.lora, cfg.lora_weight_name or "pytorch_lora_weights.safetensors"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_sha256(cfg: DiffusersConfig) -> str:
    return adapter_digest(adapter_file(cfg))


def peft_config_file(file: Path) -> Optional[Path]:
    """PEFT's adapter_config.json beside an `adapter_model.safetensors` (PEFT's `save_pretrained` layout), or
    None for an adapter in diffusers' format."""
    config = file.parent / "adapter_config.json"
    return config if file.name == "adapter_model.safetensors" and config.is_file() else None


def adapter_digest(file: Path) -> str:
    """The adapter's identity: its weights file's sha256, or for a PEFT adapter the sha256 of both its files' (its
    config holds the scale, lora_alpha / r)."""
    config = peft_config_file(file)
    if config is None:
        return file_sha256(file)
    return hashlib.sha256(f"{file_sha256(file)} {file_sha256(config)}".encode()).hexdigest()


PEFT_PREFIX = "base_model.model."


def read_peft_adapter(file: Path, config: Path) -> tuple[dict, dict]:
    """A PEFT adapter of the transformer as diffusers loads it: its tensors named by the transformer's own modules
    (PEFT's `base_model.model.` prefix dropped) and its LoraConfig settings (rank, lora_alpha, targets)."""
    import json

    from peft import LoraConfig
    from safetensors.torch import load_file

    state_dict = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in load_file(file).items()}
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"`lora` {str(file.parent)!r}: {config.name} cannot be read: {err}") from None
    if not isinstance(settings, dict) or settings.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"`lora` {str(file.parent)!r}: {config.name} is not a LoRA adapter's config.")
    keep = {f.name for f in dataclasses.fields(LoraConfig)} - {"peft_type", "task_type", "base_model_name_or_path",
                                                                "revision", "auto_mapping", "inference_mode"}
    return state_dict, {k: v for k, v in settings.items() if k in keep}


# --- a full fine-tune's transformer ----------------------------------------------------------------------------


def transformer_files(folder: str) -> list[Path]:
    """The files that make a transformer folder (config.json and its .safetensors weights); ConfigError, naming
    what is wrong, when it is no diffusers model folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"`editor_transformer` {folder!r}: no such folder.")
    weights = sorted(path.glob("*.safetensors"))
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not (path / "config.json").is_file() or not weights:
        found = f" (it holds {', '.join(pickles)}: weights load from safetensors only)" if pickles else ""
        raise ConfigError(f"`editor_transformer` {folder!r} is not a diffusers model folder: it needs config.json "
                          f"and .safetensors weights{found}.")
    index = sorted(path.glob("*.safetensors.index.json"))
    return [path / "config.json", *index, *weights]


def transformer_sha256(folder: str) -> str:
    """One digest of the transformer folder's files (names and contents)."""
    digest = hashlib.sha256()
    for file in transformer_files(folder):
        digest.update(f"{file.name} {file_sha256(file)}\n".encode())
    return digest.hexdigest()


def transformer_class(folder: str):
    """The diffusers model class a transformer folder's config.json names."""
    import json

    import diffusers

    name = json.loads((Path(folder).expanduser() / "config.json").read_text(encoding="utf-8")).get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"`editor_transformer` {folder!r}: its config.json names no diffusers model class "
                          f"(_class_name {name!r}).")
    return cls


def check_transformer(cfg: DiffusersConfig, location: str) -> None:
    """The transformer folder is a model of the class the pipeline's own transformer is."""
    cls = transformer_class(cfg.editor_transformer)
    expected = _component_class(location, cfg, "transformer")
    if expected is not None and cls is not expected:
        raise ConfigError(f"`editor_transformer` {cfg.editor_transformer!r} is a {cls.__name__}; "
                          f"{cfg.editor_model!r}'s transformer is a {expected.__name__}.")


def check_lora(cfg: DiffusersConfig, pipeline_cls, location: str) -> None:
    """The adapter exists, is a LoRA, and fits the transformer: every module it targets exists with the shapes
    it expects (checked on an empty-weight copy of the transformer, so nothing large loads)."""
    from ..models import looks_local

    if pipeline_cls is None or not hasattr(pipeline_cls, "lora_state_dict"):
        name = pipeline_cls.__name__ if pipeline_cls is not None else "this custom pipeline"
        raise ConfigError(f"`lora` is set, but {name} cannot load LoRA adapters.")
    path = Path(cfg.lora).expanduser()
    if not path.exists() and looks_local(cfg.lora):
        raise ConfigError(f"`lora` {cfg.lora!r}: no such file or folder.")
    try:
        file = adapter_file(cfg)
        if not file.is_file():
            raise FileNotFoundError(f"{file} does not exist")
        config = peft_config_file(file)
        if config is None:
            state_dict = pipeline_cls.lora_state_dict(str(file.parent), weight_name=file.name, use_safetensors=True)
        else:
            state_dict = read_peft_adapter(file, config)[0]
    except ConfigError:
        raise
    except Exception as err:  # a missing file, a hub error, not a LoRA checkpoint: the user's to fix
        raise ConfigError(f"`lora` {cfg.lora!r} cannot be loaded: {type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}") from None
    if isinstance(state_dict, tuple):
        state_dict = state_dict[0]
    if not state_dict or not all("lora" in key for key in state_dict):
        raise ConfigError(f"`lora` {cfg.lora!r} is not a LoRA adapter (its tensors are not lora_A/lora_B weights).")
    transformer = _empty_transformer(location, cfg)
    if transformer is None:
        return
    modules = dict(transformer.named_modules())
    problems = []
    for key, tensor in state_dict.items():
        name = key.removeprefix("transformer.")
        for part in (".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight"):
            if name.endswith(part):
                module_name, which = name[: -len(part)], part.split(".")[1]
                break
        else:
            continue  # an alpha or a bias: nothing to check
        module = modules.get(module_name)
        if module is None:
            problems.append(f"{module_name} does not exist")
        elif which == "lora_A" and getattr(module, "in_features", tensor.shape[1]) != tensor.shape[1]:
            problems.append(f"{module_name} takes {module.in_features} features, the adapter {tensor.shape[1]}")
        elif which == "lora_B" and getattr(module, "out_features", tensor.shape[0]) != tensor.shape[0]:
            problems.append(f"{module_name} gives {module.out_features} features, the adapter {tensor.shape[0]}")
    if problems:
        raise ConfigError(f"`lora` {cfg.lora!r} does not fit {cfg.editor_model!r}'s transformer: "
                          f"{'; '.join(sorted(set(problems))[:5])}" + (" ..." if len(set(problems)) > 5 else ""))


def _component_class(location: str, cfg: DiffusersConfig, name: str):
    """The class of a pipeline component (e.g. "transformer"), from model_index.json; None if unknown."""
    import importlib

    import diffusers

    index = diffusers.DiffusionPipeline.load_config(location, revision=cfg.editor_revision)
    entry = index.get(name)
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] is None:
        return None
    try:
        return getattr(importlib.import_module(entry[0]), entry[1])
    except (ImportError, AttributeError):
        return None


def _empty_transformer(location: str, cfg: DiffusersConfig):
    """The pipeline's transformer with empty (meta) weights: its module names and shapes, no memory."""
    from accelerate import init_empty_weights

    cls = _component_class(location, cfg, "transformer")
    if cls is None:
        return None
    config = cls.load_config(location, subfolder="transformer", revision=cfg.editor_revision)
    with init_empty_weights():
        return cls.from_config(config)
