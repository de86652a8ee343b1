"""`qwen_vl`: a Qwen-VL judge (Qwen3-VL dense or MoE, Qwen2.5-VL) through transformers, running any protocol
(bench_lib.protocols) in two modes:

- logits (default, fast): no text is generated. For each view of the protocol (its images and text), the
  batch's prefixes are prefilled once (left-padded) and every question of the view is asked on that KV cache.
  An answer is read from the next-token distribution over the scale's answers: digits, renormalised (Qwen
  tokenizers write "10" as "1" + "0", so one cached step after a forced "1" separates 1 from 10), or yes/no
  (P(yes) renormalised over yes and no). The answer's value is the expected value; its distribution is kept.
- generate: greedy, left-padded batched generation per view: a short rationale, then a JSON object with the
  view's answers; only the new tokens are decoded.

Parse policy, both modes: an answer that does not parse strictly (generate: no valid JSON object at the end;
logits: less than `judge_min_digit_mass` of the probability on the scale's answers) is asked once more, in one
batch, with a stricter format instruction; if that fails too, the judgement fails (the sample becomes
`judge_failed`) and the raw answers are kept. An unreadable answer is never scored 0 or guessed.
Model libraries are imported inside the methods that need them.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from ..backends import Judge, register_judge
from ..config import ConfigError, Dtype, JudgeConfig, option, result_fields
from ..models import check_model_name, resolve_model
from ..protocols.base import YES_NO, ZERO_TO_TEN, Protocol, Scale
from ..torch_utils import free_memory, torch_dtype
from .common import (
    GENERATE_FORMAT,
    STRICT_GENERATE_FORMAT,
    AnswerFormatError,
    Judgement,
    JudgeRequest,
    ask_images,
    build_messages,
    json_template,
    parse_answer,
)

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

    def __init__(self, cfg: QwenVLConfig, *, judge: JudgeConfig, protocol: Protocol, device,
                 device_map: Optional[dict] = None, trust_remote_code: bool = False):
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
        self._setup(cfg, judge, protocol, model, processor)
        logger.info("judge %s loaded as %s (%s mode, protocol %s)", cfg.judge_model, type(self.model).__name__,
                    judge.judge_mode, protocol.name)

    @classmethod
    def from_parts(cls, cfg: QwenVLConfig, judge: JudgeConfig, protocol: Protocol, model, processor) -> QwenVLJudge:
        """A judge around a model and processor built elsewhere (scripts/bench_judge.py: random real-size weights)."""
        out = cls.__new__(cls)
        out._setup(cfg, judge, protocol, model, processor)
        return out

    def _setup(self, cfg: QwenVLConfig, judge: JudgeConfig, protocol: Protocol, model, processor) -> None:
        self.cfg = cfg
        self.judge_cfg = judge
        self.protocol = protocol
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

    def score(self, requests: list[JudgeRequest]) -> list[Judgement]:
        """Every question the protocol asks of every request: the views of the batch in order, each view's
        requests together (one prefill in logits mode, one generation in generate mode)."""
        import torch

        judgements = [Judgement(answers={}, distributions={}, digit_mass={}) for _ in requests]
        groups: OrderedDict = OrderedDict()
        for i, request in enumerate(requests):
            for ask in self.protocol.asks(request.sample, request.images):
                key = (ask.view, tuple((q.name, q.text, q.scale.name) for q in ask.questions))
                groups.setdefault(key, []).append((i, ask))
        rationales: list[list[tuple[str, str]]] = [[] for _ in requests]
        with torch.inference_mode():
            for (view, _), members in groups.items():
                if self.judge_cfg.judge_mode == "generate":
                    self._generate_view(view, members, judgements, rationales)
                else:
                    self._logits_view(members, judgements)
        for judgement, parts in zip(judgements, rationales):
            if parts:  # one view: its rationale as written; several: each labelled with its view
                judgement.rationale = parts[0][1] if len(parts) == 1 else " ".join(f"[{v}] {r}" for v, r in parts)
            if self.judge_cfg.judge_mode == "generate":
                judgement.digit_mass = None
            if judgement.error is not None:
                judgement.answers = judgement.distributions = None
        return judgements

    # --- logits mode ------------------------------------------------------------------------------

    def _logits_view(self, members, judgements: list[Judgement]) -> None:
        from transformers import DynamicCache

        asks = [ask for _, ask in members]
        questions = asks[0].questions
        prefix, tail = self._encode_prefix(asks, f"{questions[0].text} {questions[0].scale.instruction}")
        cache = DynamicCache()
        self.model(**prefix, **{self._cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
        for q in questions:
            values, dists, masses, first = self._ask(prefix, cache, f"{q.text} {q.scale.instruction}{tail}", q.scale)
            off = [k for k, m in enumerate(masses) if self._off_format(m)]
            if off:  # one re-ask for the whole view (cheap: the prefix is cached); used only where needed
                for k in off:
                    judgements[members[k][0]].raw.append(f"{q.name}: {self._top_tokens(first[k])}")
                values2, dists2, masses2, first2 = self._ask(prefix, cache, f"{q.text} {q.scale.strict_instruction}"
                                                                          f"{tail}", q.scale)
                for k in off:
                    values[k], dists[k], masses[k] = values2[k], dists2[k], masses2[k]
                    if self._off_format(masses2[k]):
                        judgements[members[k][0]].raw.append(f"{q.name} (re-asked): {self._top_tokens(first2[k])}")
            for k, (i, _) in enumerate(members):
                judgement = judgements[i]
                if k in off and judgement.parse == "ok":
                    judgement.parse = "reasked"
                self._accept_logits(judgement, q.name, values[k], dists[k], masses[k])

    def _accept_logits(self, judgement: Judgement, name: str, value: float, dist: list[float], mass: float) -> None:
        judgement.digit_mass[name] = mass if math.isfinite(mass) else None
        if judgement.error is not None:
            return
        if not (math.isfinite(value) and math.isfinite(mass)):
            judgement.error = "the judge's logits are not finite (NaN/inf)"
            judgement.parse = None  # not a format problem: the report counts it under judge_failed only
        elif self._off_format(mass):
            judgement.parse = "failed"
            judgement.error = (f"the judge answered off-format twice: P(answer on the scale) for {name} "
                               f"{float(f'{mass:.4g}')} < judge_min_digit_mass {self.cfg.judge_min_digit_mass}")
        else:
            judgement.answers[name] = value
            judgement.distributions[name] = dist

    def _off_format(self, mass: float) -> bool:
        """No probability on the scale's answers at all is off-format whatever the threshold."""
        return not (mass >= self.cfg.judge_min_digit_mass and mass > 0.0)

    def _encode_prefix(self, asks, marker: str):
        """The view's prefixes (images + text, left-padded) and the chat text that follows a question."""
        texts = self.processor.apply_chat_template([build_messages(a, marker) for a in asks],
                                                   add_generation_prompt=True, tokenize=False)
        cut = [text.rindex(marker) for text in texts]
        tail = texts[0][cut[0] + len(marker):]  # e.g. "<|im_end|>\n<|im_start|>assistant\n"
        prefix = self.processor(text=[text[:c] for text, c in zip(texts, cut)], images=[ask_images(a) for a in asks],
                                padding=True, return_tensors="pt")
        return prefix.to(self.model.device), tail

    def _ask(self, prefix, cache, suffix_text: str, scale: Scale):
        """One question after the cached prefix: per row its value, distribution over the scale, the probability
        it put on the scale's answers, and its first-token logits. The cache is cut back to the prefix after."""
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
        ten = scale is ZERO_TO_TEN  # "10" is two tokens: one more cached step, after a forced "1"
        generation = self._greedy(max_new_tokens=2 if ten else 1, output_logits=True, return_dict_in_generate=True,
                                  eos_token_id=self.model.generation_config.eos_token_id)
        processors = [_force_first_token(self.digit_ids[1], prompt_length=inputs["input_ids"].shape[1])] if ten else []
        out = self.model.generate(**inputs, **{self._cache_kwarg: cache}, generation_config=generation,
                                  logits_processor=LogitsProcessorList(processors))
        cache.crop(prefix_length - cache.get_seq_length())  # negative: drop the question's tokens
        if ten:
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

    # --- generate mode ----------------------------------------------------------------------------

    def _generate_view(self, view: str, members, judgements: list[Judgement], rationales: list[list[str]]) -> None:
        asks = [ask for _, ask in members]
        questions = asks[0].questions
        template = json_template(questions)
        texts = self.generate_text(asks, GENERATE_FORMAT.format(template=template))
        retry = []
        for k, text in enumerate(texts):
            if not self._accept_text(members[k][0], text, questions, judgements, rationales, view):
                retry.append(k)
        if retry:  # one batched re-ask of the answers that did not parse
            texts = self.generate_text([asks[k] for k in retry], STRICT_GENERATE_FORMAT.format(template=template))
            for k, text in zip(retry, texts):
                i = members[k][0]
                if self._accept_text(i, text, questions, judgements, rationales, view, final=True) \
                        and judgements[i].parse == "ok":
                    judgements[i].parse = "reasked"

    def _accept_text(self, i: int, text: str, questions, judgements, rationales, view: str, *, final=False) -> bool:
        judgement = judgements[i]
        try:
            answers, rationale = parse_answer(text, questions)
        except AnswerFormatError as err:
            judgement.raw.append(text)
            if final and judgement.error is None:
                judgement.parse = "failed"
                judgement.error = f"the judge's answer did not parse twice: {err}"
            return False
        for q in questions:
            judgement.answers[q.name] = answers[q.name]
            judgement.distributions[q.name] = [1.0 if v == answers[q.name] else 0.0 for v in q.scale.values]
        if rationale:
            rationales[i].append((view, rationale))
        return True

    def generate_text(self, asks, instructions: str, **generate_kwargs) -> list[str]:
        """Greedy, left-padded batched generation; returns only the new text of each answer."""
        inputs = self.processor.apply_chat_template(
            [build_messages(a, instructions) for a in asks], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", processor_kwargs={"padding": True},
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
