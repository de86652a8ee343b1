"""`qwen_vl`: a Qwen-VL judge (Qwen3-VL dense or MoE, Qwen2.5-VL) through transformers, the two primitives of the
judge contract (bench_lib.judging):

- `read_scales` (logits mode, the default, fast): no text is generated. A batch of requests that share their
  questions (a protocol's view) is prefilled once (left-padded) and every question is asked on that KV cache.
  An answer is read from the next-token distribution over the scale's answers: digits, renormalised (Qwen
  tokenizers write "10" as "1" + "0", so one cached step after a forced "1" separates 1 from 10), or yes/no
  (P(yes) renormalised over yes and no, every one-token spelling counted). The answer's value is the expected
  value; its distribution is kept.
- `generate`: greedy, left-padded batched generation; only the new tokens are decoded.

What is asked, how answers are parsed and when a question is asked again is bench_lib.judges.policy's, the same
for every backend. Model libraries are imported inside the methods that need them.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from ..backends import Judge, register_judge
from ..config import ConfigError, Dtype, JudgeConfig, option, result_fields
from ..judging import (
    YES_NO,
    ZERO_TO_TEN,
    Completion,
    JudgeRequest,
    Prompt,
    Reading,
    Scale,
    ScalePrompt,
    ScaleReader,
    TextPart,
)
from ..models import check_model_name, resolve_model
from ..torch_utils import free_memory, torch_dtype

logger = logging.getLogger(__name__)


def expected_score(first_logits, after_one_logits, digit_ids: list[int], *, with_distribution: bool = False):
    """Expected 0-10 score from next-token logits.

    first_logits: [B, V] at the answer's first token. after_one_logits: [B, V] after the token "1".
    digit_ids: token ids of "0".."9". Returns (score [B], digit_mass [B]), and with `with_distribution` also
    P(0..10) [B, 11].

    The first-token distribution is renormalised over the ten digits. "1" means 1 or 10: given "1",
    "0" means 10, any non-digit means 1, and other digits (11-19) are not valid answers and are
    renormalised away. So E = sum_d d*P(d) + 9*P(1)*P(10 | 1).
    """
    import torch

    ids = torch.tensor(digit_ids, device=first_logits.device)
    first = torch.softmax(first_logits.double(), dim=-1)[:, ids]
    digit_mass = first.sum(-1)
    first = first / digit_mass.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    after_one = torch.softmax(after_one_logits.double(), dim=-1)[:, ids.to(after_one_logits.device)].to(first.device)
    valid = (1.0 - after_one[:, 1:].sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
    p_ten_given_one = (after_one[:, 0] / valid).clamp(0.0, 1.0)
    values = torch.arange(10, dtype=torch.float64, device=first.device)
    score = (first * values).sum(-1) + 9.0 * first[:, 1] * p_ten_given_one
    if not with_distribution:
        return score, digit_mass
    distribution = torch.cat([first, (first[:, 1] * p_ten_given_one).unsqueeze(-1)], dim=-1)
    distribution[:, 1] = first[:, 1] * (1.0 - p_ten_given_one)
    return score, digit_mass, distribution


def scale_distribution(logits, groups: tuple[list[int], ...], values: tuple[float, ...]):
    """A one-token answer's (expected value [B], mass [B], distribution [B, n]) over a scale whose value k is
    written by any token of groups[k] (a digit, or the spellings of yes / no): the next-token probabilities
    summed per value and renormalised over the scale."""
    import torch

    probs = torch.softmax(logits.double(), dim=-1)
    per_value = torch.stack([probs[:, group].sum(-1) for group in groups], dim=-1)
    mass = per_value.sum(-1)
    distribution = per_value / mass.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    expected = (distribution * torch.tensor(values, dtype=torch.float64, device=logits.device)).sum(-1)
    return expected, mass, distribution


def _force_first_token(token_id: int, prompt_length: int):
    """A logits processor: the first generated token is `token_id`, later steps are untouched."""
    import torch
    from transformers import LogitsProcessor

    class ForceFirstToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] != prompt_length:
                return scores
            forced = torch.full_like(scores, float("-inf"))
            forced[:, token_id] = 0.0
            return forced

    return ForceFirstToken()


@dataclass
class QwenVLConfig:
    judge_model: str = option(
        "", result=True, path="local",
        help="Qwen-VL judge (Qwen3-VL dense or MoE, Qwen2.5-VL): hub id or local folder; 'tiny:<name>' builds a "
             "tiny one.")
    judge_revision: Optional[str] = option(None, result=True, help="Hub revision of the judge.")
    judge_dtype: Dtype = option("bfloat16", result=True, help="Dtype of the judge's weights and compute.")
    judge_max_new_tokens: int = option(
        256, result=True,
        help="generate mode (and, with `judge_prompts`, logits mode's free text before a score): the most tokens the "
             "judge may write per answer.")
    judge_min_digit_mass: float = option(
        0.5, result=True,
        help="logits mode: a judgement whose probability of answering on the scale at all is below this is "
             "off-format (asked once more, then judge_failed) instead of getting a score.")

    def __post_init__(self):
        if not self.judge_model:
            raise ConfigError("`judge_model` is required (a Qwen-VL model: hub id or folder).")
        if self.judge_max_new_tokens < 1:
            raise ConfigError(f"`judge_max_new_tokens` must be >= 1, got {self.judge_max_new_tokens}.")
        if not 0.0 <= self.judge_min_digit_mass <= 1.0:
            raise ConfigError(f"`judge_min_digit_mass` must be in [0, 1], got {self.judge_min_digit_mass}.")


@register_judge("qwen_vl")
class QwenVLJudge(Judge):
    """Qwen3-VL (dense or MoE) or Qwen2.5-VL through `AutoModelForImageTextToText` + `AutoProcessor`, left-padded."""

    Config = QwenVLConfig

    @classmethod
    def preflight(cls, cfg: QwenVLConfig, bench) -> None:
        check_model_name("judge_model", cfg.judge_model, revision=cfg.judge_revision, marker="config.json",
                         resolve=False)

    @classmethod
    def check(cls, cfg: QwenVLConfig, bench) -> None:
        """Before any weights load (and before the edit stage): the judge model exists and is a config
        transformers can read."""
        from transformers import AutoConfig

        location = check_model_name("judge_model", cfg.judge_model, revision=cfg.judge_revision, marker="config.json")
        try:
            AutoConfig.from_pretrained(location, revision=cfg.judge_revision,
                                       trust_remote_code=bench.run.trust_remote_code)
        except (OSError, ValueError) as err:
            raise ConfigError(f"`judge_model` {cfg.judge_model!r} cannot be loaded: "
                              f"{str(err).strip().splitlines()[0][:300]}") from None

    @classmethod
    def download(cls, cfg: QwenVLConfig, bench, *, done: set) -> None:
        from ..models import download_model

        download_model("judge_model", cfg.judge_model, revision=cfg.judge_revision, pipeline=False)

    @classmethod
    def fingerprint(cls, cfg: QwenVLConfig, bench) -> dict[str, Any]:
        out = result_fields(cfg)
        # the answer's length limit only matters when the judge writes (in logits mode: a verbatim format's free
        # text before a score)
        if bench.judge.judge_mode != "generate" and not bench.judge.judge_prompts:
            del out["judge_max_new_tokens"]
        return out

    @classmethod
    def provenance(cls, cfg: QwenVLConfig) -> dict[str, Any]:
        from ..provenance import model_source

        return model_source(cfg.judge_model, cfg.judge_revision, "config.json")

    @classmethod
    def display_name(cls, cfg: QwenVLConfig) -> str:
        return cfg.judge_model

    def __init__(self, cfg: QwenVLConfig, *, judge: JudgeConfig, device, device_map: Optional[dict] = None,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = resolve_model(cfg.judge_model)
        processor = AutoProcessor.from_pretrained(path, revision=cfg.judge_revision,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, revision=cfg.judge_revision, dtype=torch_dtype(cfg.judge_dtype),
            device_map=device_map, use_safetensors=True, trust_remote_code=trust_remote_code,
        )
        if device_map is None:
            model.to(device)
        self._setup(cfg, judge, model, processor)
        logger.info("judge %s loaded as %s (%s mode)", cfg.judge_model, type(self.model).__name__, judge.judge_mode)

    @classmethod
    def from_parts(cls, cfg: QwenVLConfig, judge: JudgeConfig, model, processor) -> QwenVLJudge:
        """A judge around a model and processor built elsewhere (scripts/bench_judge.py: random real-size weights)."""
        out = cls.__new__(cls)
        out._setup(cfg, judge, model, processor)
        return out

    def _setup(self, cfg: QwenVLConfig, judge: JudgeConfig, model, processor) -> None:
        self.cfg = cfg
        self.judge_cfg = judge
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = model.eval()
        self.digit_ids = self._single_tokens([str(d) for d in range(10)], "logits scoring needs one token per digit")
        self._answer_ids: dict[str, tuple[list[int], ...]] = {}
        # transformers renamed `past_key_values` to `cache`; use whichever this version's forward takes
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _single_tokens(self, texts: list[str], why: str) -> list[int]:
        ids = []
        for text in texts:
            encoded = self.tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(f"judge tokenizer encodes {text!r} as {encoded}; {why}")
            ids.append(encoded[0])
        return ids

    def answer_ids(self, scale: Scale) -> tuple[list[int], ...]:
        """Per scale value, the token ids that start that answer (yes/no: each spelling's first token)."""
        if scale.name not in self._answer_ids:
            if scale is YES_NO:  # every spelling that is one token ("yes", "Yes", " yes"), else the word's first
                groups = []
                for answer in scale.answers:
                    encoded = [self.tokenizer.encode(w, add_special_tokens=False)
                               for w in (answer, answer.capitalize(), " " + answer)]
                    single = sorted({e[0] for e in encoded if len(e) == 1})
                    groups.append(single or [encoded[0][0]])
                groups = tuple(groups)
                if set(groups[0]) & set(groups[1]):
                    raise ValueError(f"judge tokenizer: 'yes' and 'no' start with the same token {groups}")
            else:
                groups = tuple([self.digit_ids[int(a)]] for a in scale.answers)
            self._answer_ids[scale.name] = groups
        return self._answer_ids[scale.name]

    @property
    def min_scale_mass(self) -> float:
        return self.cfg.judge_min_digit_mass

    def read_scales(self, requests: list[JudgeRequest]) -> ScaleReader:
        return _PrefixReader(self, requests)

    def _encode_prefix(self, requests: list[JudgeRequest], marker: str):
        """The requests' prefixes (images + text, left-padded) and the chat text that follows a question."""
        texts = self.processor.apply_chat_template([chat_messages(r.prompt(marker)) for r in requests],
                                                   add_generation_prompt=True, tokenize=False)
        cut = [text.rindex(marker) for text in texts]
        tail = texts[0][cut[0] + len(marker):]  # e.g. "<|im_end|>\n<|im_start|>assistant\n"
        prefix = self.processor(text=[text[:c] for text, c in zip(texts, cut)], images=[r.images() for r in requests],
                                padding=True, return_tensors="pt")
        return prefix.to(self.model.device), tail

    def _ask(self, prefix, cache, suffix_text: str, scale: Scale):
        """One question after the cached prefix: per row its value, distribution over the scale, the probability
        it put on the scale's answers, and its first-token logits. The cache is cut back to the prefix after."""
        import torch

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
        out = self._next_logits(inputs, scale, **{self._cache_kwarg: cache})
        cache.crop(prefix_length - cache.get_seq_length())  # negative: drop the question's tokens
        return self._scale_values(out, scale)

    def _next_logits(self, inputs, scale: Scale, **cache):
        """The next token's logits after `inputs` (and on a 0-10 scale, a second step's after a forced "1")."""
        from transformers import LogitsProcessorList

        ten = scale is ZERO_TO_TEN  # "10" is two tokens: one more cached step, after a forced "1"
        generation = self._greedy(max_new_tokens=2 if ten else 1, output_logits=True, return_dict_in_generate=True,
                                  eos_token_id=self.model.generation_config.eos_token_id)
        processors = [_force_first_token(self.digit_ids[1], prompt_length=inputs["input_ids"].shape[1])] if ten else []
        return self.model.generate(**inputs, **cache, generation_config=generation,
                                   logits_processor=LogitsProcessorList(processors))

    def _scale_values(self, out, scale: Scale):
        """Per row: the value, the distribution over the scale, its mass, and the first step's logits."""
        if scale is ZERO_TO_TEN:
            values, masses, dists = expected_score(out.logits[0], out.logits[1], self.digit_ids, with_distribution=True)
        else:
            values, masses, dists = scale_distribution(out.logits[0], self.answer_ids(scale), scale.values)
        return ([float(v) for v in values.cpu()], [[float(p) for p in row] for row in dists.cpu()],
                [float(m) for m in masses.cpu()], out.logits[0].float().cpu())

    def _top_tokens(self, logits, k: int = 5) -> str:
        """What the judge wanted to say instead of an answer (kept as the raw answer of an off-format judgement)."""
        import torch

        probs = torch.softmax(logits.double(), dim=-1)
        values, ids = probs.topk(k)
        return ", ".join(f"{self.tokenizer.decode([int(t)])!r} {float(p):.3f}" for p, t in zip(values, ids))

    def _encode_replies(self, prompts: list[Prompt]):
        """Prompts whose replies are started (`Prompt.reply`): the chat template's text, then each reply as it is,
        left-padded with the images."""
        texts = self.processor.apply_chat_template([chat_messages(p) for p in prompts], add_generation_prompt=True,
                                                   tokenize=False)
        return self.processor(text=[text + (p.reply or "") for text, p in zip(texts, prompts)],
                              images=[p.images() for p in prompts], padding=True,
                              return_tensors="pt").to(self.model.device)

    def read_replies(self, requests: list[JudgeRequest], prompt: ScalePrompt):
        """Logits mode along a reply layout: each request's reading after its own reply (`prompt.replies`), one
        uncached left-padded pass for the batch."""
        import torch

        with torch.inference_mode():
            inputs = self._encode_replies([r.prompt(prompt.text, reply) for r, reply in zip(requests, prompt.replies)])
            return self._scale_values(self._next_logits(inputs, prompt.scale), prompt.scale)

    # --- generate mode ----------------------------------------------------------------------------

    def generate(self, prompts: list[Prompt], **generate_kwargs) -> list[Completion]:
        """Greedy, left-padded batched generation; only the new text of each answer (`generate_kwargs`: more
        generation settings, e.g. scripts/bench_judge.py's `min_new_tokens`). A prompt with a started reply is
        continued (logits mode along a reply layout)."""
        import torch

        with torch.inference_mode():
            if any(p.reply for p in prompts):
                inputs = self._encode_replies(prompts)
            else:
                inputs = self.processor.apply_chat_template(
                    [chat_messages(p) for p in prompts], add_generation_prompt=True, tokenize=True, return_dict=True,
                    return_tensors="pt", processor_kwargs={"padding": True},
                ).to(self.model.device)
            generation = self._greedy(max_new_tokens=self.cfg.judge_max_new_tokens,
                                      eos_token_id=self.model.generation_config.eos_token_id, **generate_kwargs)
            sequences = self.model.generate(**inputs, generation_config=generation)
            new_tokens = sequences[:, inputs["input_ids"].shape[1]:]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
        return [Completion(text, prompt_tokens=n) for text, n in zip(texts, prompt_tokens)]

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


class _PrefixReader(ScaleReader):
    """The readings of one batch of requests: their content is prefilled once, at the first question (its text
    marks where the shared prefix ends in the chat template), and every question is asked on that KV cache, for
    the whole batch (so a row's reading never depends on which other rows were wanted)."""

    def __init__(self, judge: QwenVLJudge, requests: list[JudgeRequest]):
        self.judge = judge
        self.requests = requests
        self.prefix = self.cache = self.tail = None

    def read(self, prompt: ScalePrompt, rows) -> list[Optional[Reading]]:
        import torch
        from transformers import DynamicCache

        judge = self.judge
        if prompt.replies is not None:  # a reply per request: no shared prefix to cache
            values, dists, masses, first = judge.read_replies(self.requests, prompt)
            return [Reading(value, dist, mass, instead=partial(judge._top_tokens, first[k]))
                    for k, (value, dist, mass) in enumerate(zip(values, dists, masses))]
        with torch.inference_mode():
            if self.cache is None:
                self.prefix, self.tail = judge._encode_prefix(self.requests, prompt.text)
                self.cache = DynamicCache()
                judge.model(**self.prefix, **{judge._cache_kwarg: self.cache}, use_cache=True, logits_to_keep=1)
            values, dists, masses, first = judge._ask(self.prefix, self.cache,
                                                      f"{prompt.text}{self.tail}{prompt.reply_prefix or ''}",
                                                      prompt.scale)
        return [Reading(value, dist, mass, instead=partial(judge._top_tokens, first[k]))
                for k, (value, dist, mass) in enumerate(zip(values, dists, masses))]

    def close(self) -> None:
        self.prefix = self.cache = None


def chat_messages(prompt: Prompt) -> list[dict]:
    """A prompt as chat messages: its system prompt (if any), then one user turn of its parts in order."""
    content = [{"type": "text", "text": part.text} if isinstance(part, TextPart) else
               {"type": "image", "image": part.image} for part in prompt.content]
    system = [{"role": "system", "content": [{"type": "text", "text": prompt.system}]}] if prompt.system else []
    return [*system, {"role": "user", "content": content}]
