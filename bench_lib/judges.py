"""Judge backends: rate an edit with a vision-language model and the category's rubric.

Every judgement has three sub-scores from 0 to 10 (`SUBSCORES`): instruction (the correct, reasoned outcome),
consistency (what should not change did not) and quality (natural, artifact-free). `score` combines them
(bench_lib.scoring). Two modes fill the same fields:

- logits (default, fast): no text is generated. The images and the rubric are prefilled once per batch
  (left-padded) and their KV cache is shared by one question per sub-score. Each question's answer is the
  expected value of an integer 0-10 under the next-token distribution; Qwen tokenizers split "10" into
  "1" + "0", so one cached step after a forced "1" gives P("0" | "1"), which separates 1 from 10.
- generate: greedy, left-padded batched generation of a short rationale and a JSON object with the
  sub-scores; only the new tokens are decoded.

Parse policy, both modes: an answer that does not parse strictly (generate: no valid JSON object at the
end; logits: less than `judge_min_digit_mass` of the probability on digits) is asked once more, in one
batch, with a stricter format instruction; if that fails too, the judgement fails (the sample becomes
`judge_failed`) and the raw answers are kept. An unreadable answer is never scored 0 or guessed.
This module never imports accelerate.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import torch
from PIL import Image
from transformers import LogitsProcessor

from .config import SUBSCORES, ConfigError, JudgeConfig
from .editors import TORCH_DTYPES, free_memory
from .tiny import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_RUBRIC = "default"

# logits mode: one question per sub-score, asked after the rubric (they share its KV cache)
QUESTIONS = {
    "instruction": "Rate INSTRUCTION only: does the EDITED image show the correct result, as the rubric above "
                   "defines it?",
    "consistency": "Rate CONSISTENCY only: is everything the instruction does not ask to change preserved?",
    "quality": "Rate QUALITY only: is the EDITED image, on its own, natural and free of artifacts?",
}
ANSWER_FORMAT = "Answer with a single integer from 0 to 10 and nothing else."
STRICT_ANSWER_FORMAT = ("Your reply must be exactly one integer from 0 to 10, for example 7: no words, no "
                        "punctuation, no explanation.")
# generate mode
JSON_TEMPLATE = '{"instruction": <integer 0-10>, "consistency": <integer 0-10>, "quality": <integer 0-10>}'
GENERATE_FORMAT = ("First write a short rationale, at most three sentences: what changed, and whether it is the "
                   f"correct result. Then, on the last line, write only this JSON object: {JSON_TEMPLATE}")
STRICT_GENERATE_FORMAT = f"Reply with only this JSON object and no other text: {JSON_TEMPLATE}"


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
    """One sample's judgement. `subscores` is None exactly when `error` says why the judgement failed."""

    subscores: Optional[dict[str, float]] = None
    error: Optional[str] = None
    parse: Optional[str] = "ok"  # ok | reasked (first answer unparsed, second parsed) | failed; None: NaN logits
    raw: list[str] = field(default_factory=list)  # the answers that did not parse, in order
    rationale: Optional[str] = None  # generate mode
    digit_mass: Optional[dict[str, float]] = None  # logits mode: P(the answer is a digit) per sub-score


class Judge(Protocol):
    def score(self, requests: list[JudgeRequest]) -> list[Judgement]: ...

    def close(self) -> None: ...


class AnswerFormatError(ValueError):
    """A generated answer that does not end in the required JSON object."""


def parse_answer(text: str) -> tuple[dict[str, int], str]:
    """Strictly parse a generate-mode answer: (sub-scores, rationale).

    The answer must end with one JSON object (a closing code fence after it is allowed) whose keys are exactly
    the sub-scores and whose values are integers from 0 to 10; the text before it is the rationale.
    """
    body = text.strip()
    if body.endswith("```"):
        body = body[:-3].rstrip()
    if not body.endswith("}"):
        raise AnswerFormatError("the answer does not end with a JSON object")
    decoder = json.JSONDecoder()
    start = body.rfind("{")
    value = None
    while start != -1:  # the last "{" from which a JSON value runs exactly to the end
        try:
            candidate, end = decoder.raw_decode(body, start)
            if end == len(body):
                value = candidate
                break
        except json.JSONDecodeError:
            pass
        start = body.rfind("{", 0, start)
    if not isinstance(value, dict):
        raise AnswerFormatError("the answer does not end with a valid JSON object")
    if sorted(value) != sorted(SUBSCORES):
        raise AnswerFormatError(f"the JSON object has keys {sorted(value)}, expected exactly {sorted(SUBSCORES)}")
    for name in SUBSCORES:
        v = value[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10:
            raise AnswerFormatError(f"{name} is {v!r}, not an integer from 0 to 10")
    rationale = body[:start].strip()
    if rationale.endswith("```json") or rationale.endswith("```"):
        rationale = rationale.rsplit("```", 1)[0].rstrip()
    return {name: value[name] for name in SUBSCORES}, rationale


# --- rubrics ------------------------------------------------------------------------------------


class Rubrics:
    """Rubric templates `<prompts_dir>/<category>.txt`; a category without a file uses `default.txt`.

    Templates hold `{instruction}` and `{reference}`, filled by plain replacement (braces elsewhere are text).
    """

    def __init__(self, prompts_dir: str | Path):
        folder = Path(prompts_dir)
        files = sorted(folder.glob("*.txt"))
        by_name: dict[str, list[Path]] = {}
        for path in files:  # categories match rubric files case-insensitively: Physics.txt serves "physics"
            by_name.setdefault(path.stem.strip().lower(), []).append(path)
        clashes = [sorted(p.name for p in paths) for paths in by_name.values() if len(paths) > 1]
        if clashes:
            raise ConfigError(f"`prompts_dir` {str(folder)!r} has rubric files that differ only by case: {clashes}; "
                              "keep one of each.")
        try:
            self.templates = {name: paths[0].read_text(encoding="utf-8") for name, paths in sorted(by_name.items())}
        except UnicodeDecodeError as err:
            raise ConfigError(f"a rubric in `prompts_dir` {str(folder)!r} is not UTF-8 text: {err}") from None
        if DEFAULT_RUBRIC not in self.templates:
            raise ConfigError(f"`prompts_dir` {str(folder)!r} has no {DEFAULT_RUBRIC}.txt rubric")
        self._hashes = {name: hashlib.sha256(text.encode("utf-8")).hexdigest()
                        for name, text in self.templates.items()}

    def hashes(self) -> dict[str, str]:
        """sha256 of every rubric's text: a changed rubric changes scores (and the run's fingerprint)."""
        return dict(self._hashes)

    def sha256(self, category: str) -> Optional[str]:
        """The hash of the rubric a category is judged with (None without a category: never judged)."""
        return self._hashes[self.rubric_name(category)] if category else None

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


def _accept(judgement: Judgement, text: str) -> None:
    """Fill a judgement from a generated answer, or raise AnswerFormatError (leaving it untouched)."""
    subscores, rationale = parse_answer(text)
    judgement.subscores = {k: float(v) for k, v in subscores.items()}
    judgement.rationale = rationale


def build_messages(request: JudgeRequest, rubric_text: str, question: str) -> list[dict]:
    """One user turn: the images, the rubric, then the question (the last item: logits mode shares everything
    before it between the sub-score questions)."""
    content = [
        {"type": "text", "text": "Source image:"},
        {"type": "image", "image": request.source},
        {"type": "text", "text": "Edited image:"},
        {"type": "image", "image": request.edited},
    ]
    if request.reference_image is not None:
        content += [{"type": "text", "text": "Reference image (a correct result):"},
                    {"type": "image", "image": request.reference_image}]
    content += [{"type": "text", "text": rubric_text.rstrip() + "\n\n"}, {"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def request_images(request: JudgeRequest) -> list[Image.Image]:
    images = [request.source, request.edited]
    return images + [request.reference_image] if request.reference_image is not None else images


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
    """Qwen3-VL (dense or MoE) or Qwen2.5-VL through `AutoModelForImageTextToText` + `AutoProcessor`, left-padded."""

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
        processor = AutoProcessor.from_pretrained(path, revision=cfg.judge_revision,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, revision=cfg.judge_revision, dtype=TORCH_DTYPES[cfg.judge_dtype],
            device_map=device_map, use_safetensors=True, trust_remote_code=trust_remote_code,
        )
        if device_map is None:
            model.to(device)
        self._setup(cfg, model, processor)
        logger.info("judge %s loaded as %s (%s mode)", cfg.judge_model, type(self.model).__name__, cfg.judge_mode)

    @classmethod
    def from_parts(cls, cfg: JudgeConfig, model, processor) -> "QwenVLJudge":
        """A judge around a model and processor built elsewhere (scripts/bench_judge.py: random real-size weights)."""
        judge = cls.__new__(cls)
        judge._setup(cfg, model, processor)
        return judge

    def _setup(self, cfg: JudgeConfig, model, processor) -> None:
        self.cfg = cfg
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = model.eval()
        self.digit_ids = self._digit_token_ids()
        self.rubrics = Rubrics(cfg.prompts_dir)
        # transformers renamed `past_key_values` to `cache`; use whichever this version's forward takes
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _digit_token_ids(self) -> list[int]:
        ids = []
        for digit in "0123456789":
            encoded = self.tokenizer.encode(digit, add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(f"judge tokenizer encodes {digit!r} as {encoded}; logits scoring needs one token per digit")
            ids.append(encoded[0])
        return ids

    def score(self, requests: list[JudgeRequest]) -> list[Judgement]:
        with torch.inference_mode():
            if self.cfg.judge_mode == "generate":
                return self._score_generate(requests)
            return self._score_logits(requests)

    # --- logits mode ------------------------------------------------------------------------------

    def _score_logits(self, requests: list[JudgeRequest]) -> list[Judgement]:
        from transformers import DynamicCache

        prefix, tail = self._encode_prefix(requests)
        cache = DynamicCache()
        self.model(**prefix, **{self._cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
        judgements = [Judgement(subscores={}, digit_mass={}) for _ in requests]
        for name in SUBSCORES:
            scores, masses, first = self._ask(prefix, cache, f"{QUESTIONS[name]} {ANSWER_FORMAT}{tail}")
            off = [i for i, m in enumerate(masses) if self._off_format(m)]
            if off:  # one re-ask for the whole batch (cheap: the prefix is cached); used only where needed
                for i in off:
                    judgements[i].raw.append(f"{name}: {self._top_tokens(first[i])}")
                scores2, masses2, first2 = self._ask(prefix, cache, f"{QUESTIONS[name]} {STRICT_ANSWER_FORMAT}{tail}")
                for i in off:
                    scores[i], masses[i] = scores2[i], masses2[i]
                    if self._off_format(masses2[i]):
                        judgements[i].raw.append(f"{name} (re-asked): {self._top_tokens(first2[i])}")
            for i, judgement in enumerate(judgements):
                judgement.digit_mass[name] = masses[i] if math.isfinite(masses[i]) else None
                judgement.subscores[name] = scores[i]
                if i in off:
                    judgement.parse = "reasked"
        for judgement in judgements:
            self._finish_logits(judgement)
        return judgements

    def _off_format(self, digit_mass: float) -> bool:
        """No probability on digits at all is off-format whatever the threshold: its score would be a 0."""
        return not (digit_mass >= self.cfg.judge_min_digit_mass and digit_mass > 0.0)

    def _finish_logits(self, judgement: Judgement) -> None:
        masses = judgement.digit_mass
        if not all(math.isfinite(v) for v in judgement.subscores.values()) or None in masses.values():
            judgement.error = "the judge's logits are not finite (NaN/inf)"
            judgement.parse = None  # not a format problem: the report counts it under judge_failed only
        else:
            low = {k: float(f"{v:.4g}") for k, v in masses.items() if self._off_format(v)}
            if low:
                judgement.parse = "failed"
                judgement.error = (f"the judge answered off-format twice: P(digit) {low} < judge_min_digit_mass "
                                   f"{self.cfg.judge_min_digit_mass}")
        if judgement.error is not None:
            judgement.subscores = None

    def _encode_prefix(self, requests: list[JudgeRequest]):
        """The batch's shared prefix (images + rubric, left-padded) and the chat text that follows a question."""
        marker = QUESTIONS[SUBSCORES[0]]
        texts = self.processor.apply_chat_template(
            [build_messages(r, self.rubrics.render(r), marker) for r in requests], add_generation_prompt=True,
            tokenize=False,
        )
        cut = [text.rindex(marker) for text in texts]
        tail = texts[0][cut[0] + len(marker):]  # e.g. "<|im_end|>\n<|im_start|>assistant\n"
        prefix = self.processor(text=[text[:c] for text, c in zip(texts, cut)],
                                images=[request_images(r) for r in requests], padding=True, return_tensors="pt")
        return prefix.to(self.model.device), tail

    def _ask(self, prefix, cache, suffix_text: str) -> tuple[list[float], list[float], torch.Tensor]:
        """One question after the cached prefix: expected scores, digit masses, and the first-token logits.
        The cache is cut back to the prefix afterwards, ready for the next question."""
        from transformers import LogitsProcessorList

        prefix_length = prefix["input_ids"].shape[1]
        batch = prefix["input_ids"].shape[0]
        suffix = self.tokenizer(suffix_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        suffix = suffix.to(self.model.device).expand(batch, -1)
        inputs = {
            "input_ids": torch.cat([prefix["input_ids"], suffix], dim=1),
            "attention_mask": torch.cat([prefix["attention_mask"], torch.ones_like(suffix)], dim=1),
        }
        if "mm_token_type_ids" in prefix:
            inputs["mm_token_type_ids"] = torch.cat([prefix["mm_token_type_ids"], torch.zeros_like(suffix)], dim=1)
        generation = self._greedy(max_new_tokens=2, output_logits=True, return_dict_in_generate=True,
                                  eos_token_id=self.model.generation_config.eos_token_id)
        force_one = _ForceFirstToken(self.digit_ids[1], prompt_length=inputs["input_ids"].shape[1])
        out = self.model.generate(**inputs, **{self._cache_kwarg: cache}, generation_config=generation,
                                  logits_processor=LogitsProcessorList([force_one]))
        cache.crop(prefix_length - cache.get_seq_length())  # negative: drop the question's tokens
        scores, masses = expected_score(out.logits[0], out.logits[1], self.digit_ids)
        return [float(v) for v in scores.cpu()], [float(v) for v in masses.cpu()], out.logits[0].float().cpu()

    def _top_tokens(self, logits: torch.Tensor, k: int = 5) -> str:
        """What the judge wanted to say instead of a digit (kept as the raw answer of an off-format judgement)."""
        probs = torch.softmax(logits.double(), dim=-1)
        values, ids = probs.topk(k)
        return ", ".join(f"{self.tokenizer.decode([int(t)])!r} {float(p):.3f}" for p, t in zip(values, ids))

    # --- generate mode ----------------------------------------------------------------------------

    def _score_generate(self, requests: list[JudgeRequest]) -> list[Judgement]:
        judgements = [Judgement() for _ in requests]
        answers = self.generate_text(requests, GENERATE_FORMAT)
        retry = []
        for i, text in enumerate(answers):
            try:
                _accept(judgements[i], text)
            except AnswerFormatError:
                judgements[i].raw.append(text)
                retry.append(i)
        if retry:  # one batched re-ask of the answers that did not parse
            answers = self.generate_text([requests[i] for i in retry], STRICT_GENERATE_FORMAT)
            for i, text in zip(retry, answers):
                try:
                    _accept(judgements[i], text)
                    judgements[i].parse = "reasked"
                except AnswerFormatError as err:
                    judgements[i].raw.append(text)
                    judgements[i].parse = "failed"
                    judgements[i].error = f"the judge's answer did not parse twice: {err}"
        return judgements

    def generate_text(self, requests: list[JudgeRequest], instructions: str, **generate_kwargs) -> list[str]:
        """Greedy, left-padded batched generation; returns only the new text of each answer."""
        conversations = [build_messages(r, self.rubrics.render(r), instructions) for r in requests]
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"padding": True},
        ).to(self.model.device)
        generation = self._greedy(max_new_tokens=self.cfg.judge_max_new_tokens,
                                  eos_token_id=self.model.generation_config.eos_token_id, **generate_kwargs)
        sequences = self.model.generate(**inputs, generation_config=generation)
        new_tokens = sequences[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _greedy(self, **kwargs):
        """Plain greedy decoding, whatever the checkpoint's generation_config says: transformers fills every
        field left unset from it, and a shipped repetition penalty or beam count would change the scores."""
        from transformers import GenerationConfig

        settings = dict(do_sample=False, num_beams=1, num_return_sequences=1, repetition_penalty=1.0,
                        encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                        suppress_tokens=[], begin_suppress_tokens=[], renormalize_logits=False,
                        pad_token_id=self.tokenizer.pad_token_id)
        return GenerationConfig(**{**settings, **kwargs})

    def close(self) -> None:
        self.model = None
        free_memory()


JUDGES: dict[str, type] = {"qwen_vl": QwenVLJudge}


def load_judge(cfg: JudgeConfig, *, device: torch.device, device_map: Optional[dict] = None,
               trust_remote_code: bool = False) -> Judge:
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown judge backend {cfg.judge!r}; known: {sorted(JUDGES)}")
    return JUDGES[cfg.judge](cfg, device=device, device_map=device_map, trust_remote_code=trust_remote_code)
