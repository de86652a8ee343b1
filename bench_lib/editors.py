"""Editor backends: turn (source image, instruction, seed) into an edited image.

One small interface (`Editor`), one registry (`EDITORS`). This module never imports accelerate:
the runner hands it a device.
"""

from __future__ import annotations

import gc
import inspect
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
from PIL import Image

from .config import ConfigError, EditorConfig
from .tiny import resolve_model

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EditResult:
    image: Image.Image
    flags: list[str] = field(default_factory=list)  # suspicious output, e.g. "non_finite" (NaN/inf pixels)


class Editor(Protocol):
    def edit(self, image: Image.Image, instruction: str, *, seed: int) -> EditResult: ...

    def close(self) -> None:
        """Release every reference to model weights so the memory can go to the judge."""


def add_multimodal_positions(pipe) -> Callable[[], None] | None:
    """Make a Qwen-Image-Edit text encoder see the 3-D (MRoPE) positions of the image tokens.

    diffusers' Qwen-Image-Edit pipelines call the Qwen2.5-VL text encoder without the processor's
    `mm_token_type_ids`; transformers 5 then silently falls back to 1-D text positions and the prompt
    embeddings (and so the edits) are wrong. A forward pre-hook on the text encoder fills the ids in
    from `input_ids` whenever the caller left them out; it does nothing once diffusers passes them itself. Returns the hook's remover, or None when `pipe` has no
    such text encoder.
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


def check_call_values(kwargs: dict) -> None:
    """The values of the pipeline-call arguments every diffusers editing pipeline shares, checked before any
    model loads: with `num_inference_steps: 0`, say, every sample would otherwise fail one by one after the
    model loaded. (Sizes that are not a multiple of the latent grid are the pipeline's to round: it does so
    with a warning.)"""
    import math

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    rules = {
        "num_inference_steps": (lambda v: integer(v) and v >= 1, "an integer >= 1"),
        "height": (lambda v: v is None or (integer(v) and v >= 1), "an integer >= 1 (pixels)"),
        "width": (lambda v: v is None or (integer(v) and v >= 1), "an integer >= 1 (pixels)"),
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


class DiffusersEditor:
    """Any diffusers pipeline called as `pipe(image=..., prompt=..., generator=..., **editor_kwargs)`.

    One sample per call: `QwenImageEditPipeline` sizes every image of a call by the first one and
    `QwenImageEditPlusPipeline` refuses batches, so batching would change results or fail.
    """

    @staticmethod
    def check(cfg: EditorConfig, *, trust_remote_code: bool = False) -> None:
        """Before any weights load: the call's values are usable, the pipeline exists and accepts every
        `editor_kwargs` key."""
        import diffusers

        check_call_values(cfg.editor_kwargs)
        try:
            index = diffusers.DiffusionPipeline.load_config(resolve_model(cfg.editor_model),
                                                            revision=cfg.editor_revision)
        except (OSError, ValueError) as err:
            raise ConfigError(f"`editor_model` {cfg.editor_model!r} is not a diffusers pipeline: {err}") from None
        pipeline_cls = getattr(diffusers, index.get("_class_name", ""), None)
        if pipeline_cls is None:
            return  # a custom pipeline class: its call signature is only known after loading
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

    def __init__(self, cfg: EditorConfig, *, device: torch.device, trust_remote_code: bool = False):
        from diffusers import DiffusionPipeline

        self.pipe = DiffusionPipeline.from_pretrained(
            resolve_model(cfg.editor_model),
            revision=cfg.editor_revision,
            dtype=TORCH_DTYPES[cfg.editor_dtype],
            use_safetensors=True,  # never unpickle weights
            trust_remote_code=trust_remote_code,
        )
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self._remove_hook = add_multimodal_positions(self.pipe)
        self.kwargs = dict(cfg.editor_kwargs)
        # Float output lets us see NaN/inf pixels (the fp16 black-image failure) before they become bytes;
        # converting it ourselves with the pipeline's own numpy_to_pil gives the same pixels as "pil".
        if "output_type" in inspect.signature(self.pipe.__call__).parameters:
            self.kwargs["output_type"] = "np"
        logger.info("editor %s loaded as %s on %s", cfg.editor_model, type(self.pipe).__name__, device)

    def edit(self, image: Image.Image, instruction: str, *, seed: int) -> EditResult:
        # A CPU generator gives the same initial noise on every device type and GPU count.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            images = self.pipe(image=image, prompt=instruction, generator=generator, **self.kwargs).images
        if not isinstance(images, np.ndarray):
            return EditResult(image=images[0])
        array = images[:1]
        if np.isfinite(array).all():
            return EditResult(image=self.pipe.numpy_to_pil(array)[0])
        clean = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
        return EditResult(image=self.pipe.numpy_to_pil(clean)[0], flags=["non_finite"])

    def close(self) -> None:
        if self.pipe is None:
            return
        if self._remove_hook is not None:
            self._remove_hook()
        self.pipe.remove_all_hooks()  # accelerate offload hooks hold references to the modules
        self.pipe = self._remove_hook = None
        free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Baseline:
    """Sanity baselines: they need no model, so a run with them costs only the judge."""

    @staticmethod
    def check(cfg: EditorConfig, *, trust_remote_code: bool = False) -> None:
        pass

    def __init__(self, cfg: EditorConfig, *, device: torch.device, trust_remote_code: bool = False):
        if cfg.editor_kwargs:
            logger.warning("editor %r ignores editor_kwargs %s", cfg.editor, sorted(cfg.editor_kwargs))

    def close(self) -> None:
        pass


class IdentityEditor(_Baseline):
    """Returns the source unchanged: a judge that rewards doing nothing gives this a high score."""

    def edit(self, image: Image.Image, instruction: str, *, seed: int) -> EditResult:
        return EditResult(image=image.copy())


class BlankEditor(_Baseline):
    """Returns a uniform grey image of the source's size: any judge should score it near 0."""

    def edit(self, image: Image.Image, instruction: str, *, seed: int) -> EditResult:
        return EditResult(image=Image.new("RGB", image.size, (128, 128, 128)))


EDITORS: dict[str, type] = {"diffusers": DiffusersEditor, "identity": IdentityEditor, "blank": BlankEditor}


def load_editor(cfg: EditorConfig, *, device: torch.device, trust_remote_code: bool = False) -> Editor:
    if cfg.editor not in EDITORS:
        raise ValueError(f"unknown editor backend {cfg.editor!r}; known: {sorted(EDITORS)}")
    return EDITORS[cfg.editor](cfg, device=device, trust_remote_code=trust_remote_code)
