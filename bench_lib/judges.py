"""Judge backends: score an edit 0-10 with a vision-language model and the category's rubric.

The Qwen-VL judge does not generate free text. It is asked for an integer from 0 to 10 and the
score is the expected value of that integer under the model's next-token distribution: one batched
prefill gives P(first digit); Qwen tokenizers split "10" into "1" + "0", so one cached decode step
after a forced "1" gives P("0" | "1"), which separates 1 from 10. This module never imports accelerate.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import torch
from PIL import Image
from transformers import LogitsProcessor

from .config import ConfigError, JudgeConfig
from .editors import TORCH_DTYPES, free_memory
from .tiny import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_RUBRIC = "default"


@dataclass
class JudgeRequest:
    category: str
    instruction: str
    source: Image.Image
    edited: Image.Image
    reference_text: Optional[str] = None
    reference_image: Optional[Image.Image] = None


@dataclass
class Judgement:
    score: float  # expected score, 0-10
    digit_mass: float  # probability the judge gave to answering with a digit at all; low = off-format


class Judge(Protocol):
    def score(self, requests: list[JudgeRequest]) -> list[Judgement]: ...

    def close(self) -> None: ...


# --- rubrics ------------------------------------------------------------------------------------


class Rubrics:
    """Rubric templates `<prompts_dir>/<category>.txt`; a category without a file uses `default.txt`.

    Templates hold `{instruction}` and `{reference}`, filled by plain replacement (braces elsewhere are text).
    """

    def __init__(self, prompts_dir: str | Path):
        folder = Path(prompts_dir)
        self.templates = {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}
        if DEFAULT_RUBRIC not in self.templates:
            raise ValueError(f"{folder} has no {DEFAULT_RUBRIC}.txt rubric")

    def hashes(self) -> dict[str, str]:
        """sha256 of every rubric's text: a changed rubric changes scores (and the run's fingerprint)."""
        return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in self.templates.items()}

    def rubric_name(self, category: str) -> str:
        name = category.strip().lower()
        return name if name in self.templates else DEFAULT_RUBRIC

    def render(self, request: JudgeRequest) -> str:
        template = self.templates[self.rubric_name(request.category)]
        return template.replace("{instruction}", request.instruction).replace(
            "{reference}", reference_block(request.reference_text, request.reference_image is not None)
        )


def reference_block(text: Optional[str], has_image: bool) -> str:
    parts = []
    if text:
        parts.append(f"Reference: a correct edit shows: {text}")
    if has_image:
        parts.append("The third image shows a correct result.")
    if not parts:
        return "No reference is available: judge from the instruction and your own knowledge."
    return " ".join(parts)


def build_messages(request: JudgeRequest, rubric_text: str) -> list[dict]:
    content = [
        {"type": "text", "text": "Source image:"},
        {"type": "image", "image": request.source},
        {"type": "text", "text": "Edited image:"},
        {"type": "image", "image": request.edited},
    ]
    if request.reference_image is not None:
        content += [{"type": "text", "text": "Reference image (a correct result):"},
                    {"type": "image", "image": request.reference_image}]
    content.append({"type": "text", "text": rubric_text})
    return [{"role": "user", "content": content}]


# --- scoring ------------------------------------------------------------------------------------


def expected_score(first_logits: torch.Tensor, after_one_logits: torch.Tensor,
                   digit_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected 0-10 score from next-token logits.

    first_logits: [B, V] at the answer's first token. after_one_logits: [B, V] after the token "1".
    digit_ids: token ids of "0".."9". Returns (score [B], digit_mass [B]).

    The first-token distribution is renormalised over the ten digits. "1" means 1 or 10: given "1",
    "0" means 10, any non-digit means 1, and other digits (11-19) are not valid answers and are
    renormalised away. So E = sum_d d*P(d) + 9*P(1)*P(10 | 1).
    """
    ids = torch.tensor(digit_ids, device=first_logits.device)
    first = torch.softmax(first_logits.double(), dim=-1)[:, ids]
    digit_mass = first.sum(-1)
    first = first / digit_mass.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    after_one = torch.softmax(after_one_logits.double(), dim=-1)[:, ids.to(after_one_logits.device)].to(first.device)
    valid = (1.0 - after_one[:, 1:].sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
    p_ten_given_one = (after_one[:, 0] / valid).clamp(0.0, 1.0)
    values = torch.arange(10, dtype=torch.float64, device=first.device)
    score = (first * values).sum(-1) + 9.0 * first[:, 1] * p_ten_given_one
    return score, digit_mass


class _ForceFirstToken(LogitsProcessor):
    """Logits processor: the first generated token is `token_id`, later steps are untouched."""

    def __init__(self, token_id: int, prompt_length: int):
        self.token_id = token_id
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.prompt_length:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_id] = 0.0
        return forced


class QwenVLJudge:
    """Qwen3-VL (or Qwen2.5-VL) through `AutoModelForImageTextToText` + `AutoProcessor`, left-padded."""

    @staticmethod
    def check(cfg: JudgeConfig, *, trust_remote_code: bool = False) -> None:
        """Before any weights load (and before the edit stage): the judge model exists."""
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(resolve_model(cfg.judge_model), revision=cfg.judge_revision,
                                       trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise ConfigError(f"`judge_model` {cfg.judge_model!r} cannot be loaded: {err}") from None

    def __init__(self, cfg: JudgeConfig, *, device: torch.device, device_map: Optional[dict] = None,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_model(cfg.judge_model)
        self.processor = AutoProcessor.from_pretrained(path, revision=cfg.judge_revision,
                                                       trust_remote_code=trust_remote_code)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, revision=cfg.judge_revision, dtype=TORCH_DTYPES[cfg.judge_dtype],
            device_map=device_map, use_safetensors=True, trust_remote_code=trust_remote_code,
        ).eval()
        if device_map is None:
            self.model.to(device)
        self.digit_ids = self._digit_token_ids()
        self.rubrics = Rubrics(cfg.prompts_dir)
        logger.info("judge %s loaded as %s", cfg.judge_model, type(self.model).__name__)

    def _digit_token_ids(self) -> list[int]:
        ids = []
        for digit in "0123456789":
            encoded = self.processor.tokenizer.encode(digit, add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(f"judge tokenizer encodes {digit!r} as {encoded}; logits scoring needs one token per digit")
            ids.append(encoded[0])
        return ids

    def score(self, requests: list[JudgeRequest]) -> list[Judgement]:
        from transformers import GenerationConfig, LogitsProcessorList

        conversations = [build_messages(r, self.rubrics.render(r)) for r in requests]
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"padding": True},
        ).to(self.model.device)
        tokenizer = self.processor.tokenizer
        generation = GenerationConfig(
            max_new_tokens=2, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        force_one = _ForceFirstToken(self.digit_ids[1], prompt_length=inputs["input_ids"].shape[1])
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=generation,
                                      logits_processor=LogitsProcessorList([force_one]))
        scores, masses = expected_score(out.logits[0], out.logits[1], self.digit_ids)
        return [Judgement(score=float(s), digit_mass=float(m)) for s, m in zip(scores.cpu(), masses.cpu())]

    def close(self) -> None:
        self.model = None
        free_memory()


JUDGES: dict[str, type] = {"qwen_vl": QwenVLJudge}


def load_judge(cfg: JudgeConfig, *, device: torch.device, device_map: Optional[dict] = None,
               trust_remote_code: bool = False) -> Judge:
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown judge backend {cfg.judge!r}; known: {sorted(JUDGES)}")
    return JUDGES[cfg.judge](cfg, device=device, device_map=device_map, trust_remote_code=trust_remote_code)
