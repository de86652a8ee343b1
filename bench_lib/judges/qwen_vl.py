"""`qwen_vl`: a Qwen-VL judge (Qwen3-VL dense or MoE, Qwen2.5-VL) through transformers.

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
Model libraries are imported inside the methods that need them.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

from ..backends import Judge, register_judge
from ..config import SUBSCORES, ConfigError, Dtype, JudgeConfig, option, result_fields
from ..models import check_model_name, resolve_model
from ..editors.diffusers_pipeline import free_memory, torch_dtype
from .common import (ANSWER_FORMAT, GENERATE_FORMAT, QUESTIONS, STRICT_ANSWER_FORMAT, STRICT_GENERATE_FORMAT,
                     AnswerFormatError, Judgement, JudgeRequest, accept, build_messages, request_images)
from .rubrics import Rubrics

logger = logging.getLogger(__name__)


def expected_score(first_logits, after_one_logits, digit_ids: list[int]):
    """Expected 0-10 score from next-token logits.

    first_logits: [B, V] at the answer's first token. after_one_logits: [B, V] after the token "1".
    digit_ids: token ids of "0".."9". Returns (score [B], digit_mass [B]).

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
    return score, digit_mass


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
        256, result=True, help="generate mode: the most tokens the judge may write per answer.")
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
    def fingerprint(cls, cfg: QwenVLConfig, bench) -> dict[str, Any]:
        out = result_fields(cfg)
        if bench.judge.judge_mode != "generate":  # the answer's length limit only matters when the judge writes
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
    def from_parts(cls, cfg: QwenVLConfig, judge: JudgeConfig, model, processor) -> "QwenVLJudge":
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
        self.digit_ids = self._digit_token_ids()
        self.rubrics = Rubrics(judge.prompts_dir)
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
        import torch

        with torch.inference_mode():
            if self.judge_cfg.judge_mode == "generate":
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

    def _ask(self, prefix, cache, suffix_text: str):
        """One question after the cached prefix: expected scores, digit masses, and the first-token logits.
        The cache is cut back to the prefix afterwards, ready for the next question."""
        import torch
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
        force_one = _force_first_token(self.digit_ids[1], prompt_length=inputs["input_ids"].shape[1])
        out = self.model.generate(**inputs, **{self._cache_kwarg: cache}, generation_config=generation,
                                  logits_processor=LogitsProcessorList([force_one]))
        cache.crop(prefix_length - cache.get_seq_length())  # negative: drop the question's tokens
        scores, masses = expected_score(out.logits[0], out.logits[1], self.digit_ids)
        return [float(v) for v in scores.cpu()], [float(v) for v in masses.cpu()], out.logits[0].float().cpu()

    def _top_tokens(self, logits, k: int = 5) -> str:
        """What the judge wanted to say instead of a digit (kept as the raw answer of an off-format judgement)."""
        import torch

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
                accept(judgements[i], text)
            except AnswerFormatError:
                judgements[i].raw.append(text)
                retry.append(i)
        if retry:  # one batched re-ask of the answers that did not parse
            answers = self.generate_text([requests[i] for i in retry], STRICT_GENERATE_FORMAT)
            for i, text in zip(retry, answers):
                try:
                    accept(judgements[i], text)
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
