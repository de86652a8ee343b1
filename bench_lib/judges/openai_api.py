"""`openai`: a judge behind any server that speaks the OpenAI chat-completions API (the OpenAI API, Azure-style
endpoints, vLLM, SGLang, `transformers serve`), through the official `openai` client with its own retries off.

- `generate`: one request per prompt (greedy: temperature 0, top_p 1, n 1, `judge_seed`, `judge_max_new_tokens`
  as max_tokens), up to `judge_concurrency` in flight per rank.
- `read_scales` (logits mode): one request per question and request for one (two on a 0-10 scale) token with
  `top_logprobs`; the scale's answers are read from the returned log-probabilities (`scale_reading`). A started
  reply (a verbatim format's text up to its score) is sent as a final assistant message that the server continues
  (vLLM's and SGLang's `continue_final_message`); so is a generation that continues a started reply. The
  probability the judge put on the scale's answers within the top-k is the reading's mass (`digit_mass`): what
  lies outside the top-k is not returned by the server and is not counted.
- Images go as PNG data URIs at the size the protocol gave them, in the order of the request's content.
- Failures (429 with Retry-After, 5xx, timeouts, dropped connections, truncated or non-JSON bodies, content-filter
  refusals, an empty choice) are retried with exponential backoff and jitter up to `judge_max_retries`; then the
  call raises a `TransportError` subclass naming the failure (the sample becomes judge_failed; the same failure
  on the first samples stops the run early: bench_lib.failures).
- The key is read from the environment variable `judge_api_key_env` names; it is never accepted as a config
  value and never written anywhere (error texts are scrubbed of it).

What is asked, how answers are parsed and when a question is asked again is bench_lib.judges.policy's, the same
for every backend.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from ..backends import Judge, register_judge
from ..config import ConfigError, JudgeConfig, option, result_fields
from ..judging import (
    YES_NO,
    ZERO_TO_TEN,
    Completion,
    JudgeBudgetReached,
    JudgeRequest,
    JudgeUnavailable,
    Prompt,
    Reading,
    Scale,
    ScalePrompt,
    ScaleReader,
    TextPart,
)

logger = logging.getLogger(__name__)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# known key formats, and a long value that is not an upper-case variable name (AZURE_OPENAI_API_KEY_FOR_JUDGE is one)
KEY_LIKE = re.compile(r"^(sk-|sk_|Bearer\s)|^(?![A-Z][A-Z0-9_]*$)[A-Za-z0-9_\-]{32,}$")
TOP_LOGPROBS = 20  # the most the OpenAI API and vLLM return per token
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
MAX_WAIT_S = 600.0  # the longest Retry-After honoured as given
MEMO_SIZE = 512  # answers kept for a batch judged again one sample at a time (bench_lib.judge_stage)


@dataclass
class OpenAIJudgeConfig:
    judge_model: str = option(
        "", result=True, path="local",
        help="The judge model. qwen_vl: a Qwen-VL hub id or local folder ('tiny:<name>' builds a tiny one); openai: "
             "the name the server serves, e.g. gpt-4.1-2025-04-14.")
    judge_max_new_tokens: int = option(
        256, result=True,
        help="generate mode (and, with `judge_prompts`, logits mode's free text before a score): the most tokens the "
             "judge may write per answer (openai: max_tokens).")
    judge_min_digit_mass: float = option(
        0.5, result=True,
        help="logits mode: a judgement whose probability of answering on the scale at all is below this is "
             "off-format (asked once more, then judge_failed) instead of getting a score.")
    # --- the OpenAI-compatible judge server ---
    judge_base_url: str = option(
        "", result=False,
        help="openai: the server's API root, e.g. https://api.openai.com/v1 or http://node07:8000/v1 (a vLLM, "
             "SGLang or `transformers serve` server).")
    judge_api_key_env: str = option(
        "", result=False,
        help="openai: the NAME of the environment variable that holds the API key (e.g. OPENAI_API_KEY); empty: no "
             "key. The key itself is never a config value.")
    judge_concurrency: int = option(4, result=False, help="openai: requests in flight per process.")
    judge_timeout_s: float = option(120.0, result=False, help="openai: seconds before a request counts as failed.")
    judge_max_retries: int = option(
        5, result=False,
        help="openai: retries of a failed request (429, 5xx, timeout, dropped connection, bad body, refusal), with "
             "exponential backoff and jitter; then the sample is judge_failed.")
    judge_max_requests: Optional[int] = option(
        None, result=False,
        help="openai: a hard budget of requests for the run (retries included); when reached, the run writes the "
             "report of what was judged and exits 1 (a rerun continues).")
    judge_seed: Optional[int] = option(0, result=True, help="openai: the request's `seed` (null: none sent).")
    judge_extra_body: dict = option(
        default_factory=dict, result=True,
        help="openai: extra request fields (k=v,... or JSON), e.g. a vLLM server's top_k or repetition_penalty.")
    judge_price_per_mtok: dict = option(
        default_factory=dict, result=False,
        help="openai: price per million tokens, prompt=X,completion=Y: the report gives the run's cost.")

    def __post_init__(self):
        if not self.judge_model:
            raise ConfigError("`judge_model` is required (the name the judge server serves).")
        if not self.judge_base_url:
            raise ConfigError("`judge_base_url` is required for the openai judge (e.g. http://localhost:8000/v1).")
        try:
            parts = urlsplit(self.judge_base_url)
            parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
        except ValueError as err:
            raise ConfigError(f"`judge_base_url` is not a valid URL: {err}.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"`judge_base_url` must be an http(s) URL, got {_host_only(self.judge_base_url)!r}.")
        if parts.username or parts.password or parts.query:
            raise ConfigError("`judge_base_url` must not carry credentials or a query; put the key in the environment "
                              "variable named by `judge_api_key_env`.")
        if self.judge_api_key_env and not ENV_NAME.match(self.judge_api_key_env) \
                or KEY_LIKE.match(self.judge_api_key_env or ""):
            raise ConfigError("`judge_api_key_env` takes the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                              "and this value is not one (it looks like a key: a key is never accepted in a recipe "
                              "or flag; export it and name the variable).")
        if self.judge_max_new_tokens < 1:
            raise ConfigError(f"`judge_max_new_tokens` must be >= 1, got {self.judge_max_new_tokens}.")
        if not 0.0 <= self.judge_min_digit_mass <= 1.0:
            raise ConfigError(f"`judge_min_digit_mass` must be in [0, 1], got {self.judge_min_digit_mass}.")
        if self.judge_concurrency < 1:
            raise ConfigError(f"`judge_concurrency` must be >= 1, got {self.judge_concurrency}.")
        if not self.judge_timeout_s > 0:
            raise ConfigError(f"`judge_timeout_s` must be > 0, got {self.judge_timeout_s}.")
        if self.judge_max_retries < 0:
            raise ConfigError(f"`judge_max_retries` must be >= 0, got {self.judge_max_retries}.")
        if self.judge_max_requests is not None and self.judge_max_requests < 1:
            raise ConfigError(f"`judge_max_requests` must be >= 1, got {self.judge_max_requests}.")
        unknown = sorted(set(self.judge_price_per_mtok) - {"prompt", "completion"})
        if unknown:
            raise ConfigError(f"`judge_price_per_mtok` takes prompt and completion, got {unknown}.")
        for name, price in self.judge_price_per_mtok.items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                raise ConfigError(f"`judge_price_per_mtok.{name}` must be a number >= 0, got {price!r}.")
        reserved = sorted(set(self.judge_extra_body) & {"model", "messages", "max_tokens", "temperature", "top_p", "n",
                                                         "seed", "logprobs", "top_logprobs", "stream"})
        if reserved:
            raise ConfigError(f"`judge_extra_body` may not set {reserved}: the harness sets those (greedy settings and "
                              "the keys of their own).")


# --- failures ------------------------------------------------------------------------------------------


class TransportError(JudgeUnavailable):
    """A request that failed for good (after its retries). Subclasses name the kind: the early stop compares them."""


class RateLimited(TransportError):
    pass


class ServerError(TransportError):
    pass


class TimedOut(TransportError):
    pass


class ConnectionFailed(TransportError):
    pass


class BadResponse(TransportError):
    """A body that is truncated, not JSON, or holds no usable choice (empty, or refused by a content filter)."""


class Refused(TransportError):
    """An answer the server will not change by asking again (400, 401, 403, 404, 422): not retried."""


class BudgetReached(JudgeBudgetReached):
    """`judge_max_requests` requests were sent: the judge stage stops (bench_lib.judge_stage)."""

    def __init__(self, limit: int):
        super().__init__(f"budget reached ({limit} requests); rerun to continue")
        self.limit = limit


def _host_only(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") if parts.hostname else ""


def retry_after_s(headers: Any) -> Optional[float]:
    """A Retry-After header's wait in seconds (a number, or an HTTP date), or None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_s(retry: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1.5] times base * 2^retry, capped."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** retry) * (0.5 + rng.random())


def classify(err: BaseException) -> tuple[type[TransportError], bool, Optional[float]]:
    """An `openai` client exception -> (the failure's kind, whether asking again can help, Retry-After)."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return TimedOut, True, None
    if isinstance(err, openai.APIConnectionError):
        return ConnectionFailed, True, None
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status == 429:
            return RateLimited, True, retry_after_s(err.response.headers)
        if status >= 500 or status in (408, 409):
            return ServerError, True, retry_after_s(err.response.headers)
        return Refused, False, None
    if isinstance(err, (openai.APIResponseValidationError, json.JSONDecodeError, ValueError)):
        return BadResponse, True, None
    return BadResponse, True, None


# --- requests ------------------------------------------------------------------------------------------


def image_data_uri(image: Any) -> str:
    """A PIL image as a PNG data URI, at its size (lossless: the server sees the pixels the protocol gave)."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(prompt: Prompt, *, reply_prefix: Optional[str] = None) -> list[dict]:
    """A prompt as OpenAI chat messages: its system prompt (if any), one user turn of its parts in order (images as
    data URIs), and, with `reply_prefix`, the start of the assistant's reply (continued by the server)."""
    content = [{"type": "text", "text": part.text} if isinstance(part, TextPart) else
               {"type": "image_url", "image_url": {"url": image_data_uri(part.image)}}
               for part in prompt.content]
    system = [{"role": "system", "content": prompt.system}] if prompt.system else []
    reply = [{"role": "assistant", "content": reply_prefix}] if reply_prefix else []
    return [*system, {"role": "user", "content": content}, *reply]


def _choice_text(response: Any, scrub: Callable[[str], str]) -> str:
    """The answer's text (scrubbed of the key), or a BadResponse for an empty choice or a content-filter refusal."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise BadResponse("the server returned no choice")
    choice = choices[0]
    if choice.finish_reason == "content_filter":
        raise BadResponse("the answer was withheld by the server's content filter")
    message = choice.message
    if message is None or message.content is None:
        refusal = getattr(message, "refusal", None) if message is not None else None
        raise BadResponse(f"the model refused: {scrub(str(refusal))[:200]}" if refusal else
                          "the server returned an empty choice")
    return scrub(message.content)


# --- logits mode: top_logprobs --------------------------------------------------------------------------


def _answer_value(token: str, scale: Scale) -> Optional[float]:
    """The scale value a token writes, or None (surrounding spaces ignored; yes/no case-insensitively)."""
    text = token.strip()
    if scale is YES_NO:
        text = text.lower()
    for value, answer in zip(scale.values, scale.answers):
        if text == answer:
            return value
    return None


def scale_reading(steps: Sequence[Sequence[tuple[str, float]]], scale: Scale) -> Reading:
    """A question's answer from the returned top log-probabilities: `steps[t]`: (token, logprob) of the top-k at
    generated token t (steps[0]: the answer's first token; a second step matters only on a 0-10 scale).

    Each value's probability is the sum over the top-k tokens that write it (" 7" and "7"); the mass is their sum,
    the distribution the values' probabilities renormalised over the scale, the value its expected value. What lies
    outside the top-k is unknown and not counted. On a 0-10 scale a tokenizer may write "10" as one token (OpenAI's)
    or as "1" + "0" (Qwen's): a one-token "10" counts as 10; a "1" counts as 1, except for the share the second
    step gives to "0" after it, which is only known when the greedy answer began with "1" (otherwise all of it
    counts as 1). A log-probability that is NaN or above 0 (a broken server) gives no finite reading."""
    if not steps:
        return Reading(0.0, [0.0] * len(scale.values), 0.0, instead=lambda: "no log-probabilities")
    first = steps[0]
    if any(not lp <= 1e-6 for step in steps[:2] for _, lp in step):  # as NaN logits: the sample fails, unfilled
        nan = math.nan
        return Reading(nan, [nan] * len(scale.values), nan, instead=lambda: "log-probabilities that are not <= 0")
    probs = [0.0] * len(scale.values)
    for token, logprob in first:
        value = _answer_value(token, scale)
        if value is not None:
            probs[scale.values.index(value)] += math.exp(logprob)
    if scale is ZERO_TO_TEN and probs[1] > 0 and len(steps) > 1 and _greedy_token(first) is not None \
            and _greedy_token(first).strip() == "1":
        after = {}
        for token, logprob in steps[1]:
            if token.strip() != token or not token.isdigit() or len(token) != 1:
                continue
            after[token] = after.get(token, 0.0) + math.exp(logprob)
        # given "1": "0" means 10, another digit (11-19) is no valid answer (renormalised away), anything else 1
        valid = 1.0 - sum(p for d, p in after.items() if d != "0")
        ten = min(1.0, after.get("0", 0.0) / valid) if valid > 0 else 0.0
        probs[10] += probs[1] * ten
        probs[1] *= 1.0 - ten
    mass = sum(probs)
    top = ", ".join(f"{token!r} {math.exp(lp):.3f}" for token, lp in sorted(first, key=lambda t: -t[1])[:5])
    if mass <= 0:
        return Reading(0.0, [0.0] * len(scale.values), 0.0, instead=lambda: top)  # off-format (asked again)
    distribution = [p / mass for p in probs]
    value = sum(v * p for v, p in zip(scale.values, distribution))
    return Reading(value, distribution, mass, instead=lambda: top)


def _greedy_token(top: Sequence[tuple[str, float]]) -> Optional[str]:
    return max(top, key=lambda t: t[1])[0] if top else None


def response_steps(response: Any) -> list[list[tuple[str, float]]]:
    """The (token, logprob) top-k of each generated token of a chat completion (OpenAI's `choices[0].logprobs
    .content[t].top_logprobs`), or [] when the server returned none. A token the server sent no top-k for keeps
    its place (an empty list): the answer is never read from the token after it."""
    choices = getattr(response, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) or []
    return [[(entry.token, float(entry.logprob)) for entry in (step.top_logprobs or [])] for step in content]


# --- the backend ---------------------------------------------------------------------------------------


@dataclass
class Usage:
    """This process's requests to the judge server, and the tokens they were charged."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0


def _api_key(cfg: OpenAIJudgeConfig) -> str:
    if not cfg.judge_api_key_env:
        return "EMPTY"  # local servers take any key; the client needs one
    key = os.environ.get(cfg.judge_api_key_env)
    if not key:
        raise ConfigError(f"`judge_api_key_env`: the environment variable {cfg.judge_api_key_env} is not set (or "
                          "empty); export the judge server's key in it.")
    return key


def _client(cfg: OpenAIJudgeConfig, key: str, *, timeout: Optional[float] = None):
    import openai

    return openai.OpenAI(base_url=cfg.judge_base_url, api_key=key, max_retries=0,
                         timeout=timeout if timeout is not None else cfg.judge_timeout_s)


class _Scrub:
    """Removes the key from any text that came from the server or could be written (answers, refusals, error
    messages, /v1/models entries). Scrub before cutting a text short: a cut through the key would leave a piece
    of it that no longer matches."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key and self.key != "EMPTY" else text

    def deep(self, value: Any) -> Any:
        """`value` with every string in it (keys of mappings included) scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return value


HTTP_LOGGERS = ("httpx", "httpx2", "openai")


def _quiet_http_logs() -> dict[str, int]:
    """The HTTP client logs every request at INFO: one line per judgement would drown the run's own log. Returns
    the levels it replaced, for `_restore_logs` (the caller's logging is theirs again afterwards)."""
    levels = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(max(levels[name], logging.WARNING))
    return levels


def _restore_logs(levels: dict[str, int]) -> None:
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


_SERVED: dict[str, Any] = {}  # base URL (host only) + model -> what /v1/models said, filled by the preflight


def _describe_error(err: BaseException, scrub: _Scrub) -> str:
    import openai

    if isinstance(err, openai.APIStatusError):
        body = err.body if isinstance(err.body, (dict, str)) else None
        detail = body.get("message") or body.get("error") or body.get("detail") if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message") or json.dumps(detail)
        text = f"HTTP {err.status_code}" + (f": {scrub(' '.join(str(detail).split()))[:200]}" if detail else "")
    else:
        cause = err.__cause__ or err.__context__
        text = f"{type(err).__name__}" + (f" ({type(cause).__name__}: {cause})" if cause else f": {err}")
    return scrub(" ".join(text.split()))[:300]  # scrubbed first: no cut can leave a piece of the key


@register_judge("openai")
class OpenAIJudge(Judge):
    """Any server speaking the OpenAI chat-completions API (OpenAI, Azure-style, vLLM, SGLang, transformers serve)."""

    Config = OpenAIJudgeConfig

    @classmethod
    def preflight(cls, cfg: OpenAIJudgeConfig, bench) -> None:
        """One cheap request before any model loads: the key's variable is set, the server answers, the model is
        served (and in logits mode returns top_logprobs). Not retried: connection refused, DNS failure, 401/403,
        404, an unknown model; retried as elsewhere: 429, 5xx, timeouts. A ConfigError (exit 2) otherwise."""
        levels = _quiet_http_logs()
        try:
            cls._preflight(cfg, bench)
        finally:
            _restore_logs(levels)

    @classmethod
    def _preflight(cls, cfg: OpenAIJudgeConfig, bench) -> None:
        import openai

        key = _api_key(cfg)
        scrub = _Scrub(key)
        where = _host_only(cfg.judge_base_url)
        client = _client(cfg, key, timeout=min(cfg.judge_timeout_s, 60.0))
        try:
            _SERVED[f"{where} {cfg.judge_model}"] = _listed_model(client, cfg.judge_model, scrub)
        except openai.APIConnectionError as err:
            if not isinstance(err, openai.APITimeoutError):
                raise ConfigError(f"the judge server at {where} cannot be reached: {_describe_error(err, scrub)}") \
                    from None
        except openai.APIStatusError as err:
            if err.status_code in (401, 403):
                raise ConfigError(f"the judge server at {where} refused the key"
                                  f"{' in ' + cfg.judge_api_key_env if cfg.judge_api_key_env else ''}: "
                                  f"{_describe_error(err, scrub)}") from None
        logits = bench.judge.judge_mode == "logits"
        body = dict(model=cfg.judge_model, messages=[{"role": "user", "content": "Reply with the digit 0."}],
                    max_tokens=1, temperature=0.0, **({"logprobs": True, "top_logprobs": TOP_LOGPROBS} if logits
                                                      else {}))
        rng = random.Random()
        for retry in range(cfg.judge_max_retries + 1):
            try:
                response = client.chat.completions.create(**body, extra_body=cfg.judge_extra_body or None)
                break
            except Exception as err:
                kind, retryable, wait = classify(err)
                if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                    retryable = False  # refused or no such host: asking again within seconds does not help
                why = _describe_error(err, scrub)
                if isinstance(err, openai.APIStatusError) and err.status_code in (400, 404, 422) \
                        and "model" in why.lower():
                    raise ConfigError(f"the judge server at {where} does not serve `judge_model` "
                                      f"{cfg.judge_model!r}: {why}") from None
                if isinstance(err, openai.APIStatusError) and err.status_code in (401, 403):
                    raise ConfigError(f"the judge server at {where} refused the key"
                                      f"{' in ' + cfg.judge_api_key_env if cfg.judge_api_key_env else ''}: "
                                      f"{why}") from None
                if not retryable or retry == cfg.judge_max_retries:
                    raise ConfigError(f"the judge server at {where} did not answer the preflight request for "
                                      f"{cfg.judge_model!r}{f' after {retry + 1} tries' if retryable else ''}: "
                                      f"{why}") from None
                time.sleep(min(wait, MAX_WAIT_S) if wait is not None else backoff_s(retry, rng))
        if logits and not any(response_steps(response)):
            raise ConfigError(f"judge_mode logits needs log-probabilities, and the judge server at {where} returned "
                              f"no top_logprobs for {cfg.judge_model!r}: use --judge_mode generate with this server "
                              "(or a server that returns them: the OpenAI API, vLLM, SGLang).")

    @classmethod
    def check(cls, cfg: OpenAIJudgeConfig, bench) -> None:
        if bench.judge.judge_batch_size < cfg.judge_concurrency:
            logger.warning("judge_concurrency %d > judge_batch_size %d: at most %d requests are in flight (a batch "
                           "is the unit sent together)", cfg.judge_concurrency, bench.judge.judge_batch_size,
                           bench.judge.judge_batch_size)

    @classmethod
    def fingerprint(cls, cfg: OpenAIJudgeConfig, bench) -> dict[str, Any]:
        out = result_fields(cfg)
        # the answer's length limit only matters when the judge writes (in logits mode: a verbatim format's free
        # text before a score)
        if bench.judge.judge_mode != "generate" and not bench.judge.judge_prompts:
            del out["judge_max_new_tokens"]
        return out

    @classmethod
    def provenance(cls, cfg: OpenAIJudgeConfig) -> dict[str, Any]:
        where = _host_only(cfg.judge_base_url)
        key = f"{where} {cfg.judge_model}"
        if key not in _SERVED:
            try:
                api_key = _api_key(cfg)
                _SERVED[key] = _listed_model(_client(cfg, api_key, timeout=10.0), cfg.judge_model, _Scrub(api_key))
            except Exception as err:  # a record, not a check: the preflight did those
                _SERVED[key] = {"error": _describe_error(err, _Scrub(os.environ.get(cfg.judge_api_key_env, "")))}
        return {"id": cfg.judge_model, "source": "server", "server": where, "served_model": _SERVED[key],
                "settings": {"temperature": 0.0, "top_p": 1.0, "seed": cfg.judge_seed,
                             "max_tokens": cfg.judge_max_new_tokens, "extra_body": cfg.judge_extra_body}}

    @classmethod
    def display_name(cls, cfg: OpenAIJudgeConfig) -> str:
        return cfg.judge_model

    def __init__(self, cfg: OpenAIJudgeConfig, *, judge: JudgeConfig, device=None, device_map: Optional[dict] = None,
                 trust_remote_code: bool = False):
        self.cfg = cfg
        self.judge_cfg = judge
        key = _api_key(cfg)
        self._scrub = _Scrub(key)
        self._client = _client(cfg, key)
        self._pool = ThreadPoolExecutor(max_workers=cfg.judge_concurrency, thread_name_prefix="judge-request")
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._memo: OrderedDict[str, Any] = OrderedDict()
        self.usage = Usage()
        self.budget: Optional[int] = None  # this process's share of `judge_max_requests` (set_budget)
        self.host = _host_only(cfg.judge_base_url)
        self._log_levels = _quiet_http_logs()  # given back on close
        logger.info("judge %s served at %s (%s mode, %d requests in flight)", cfg.judge_model, self.host,
                    judge.judge_mode, cfg.judge_concurrency)

    @property
    def min_scale_mass(self) -> float:
        return self.cfg.judge_min_digit_mass

    @classmethod
    def request_budget(cls, cfg: OpenAIJudgeConfig) -> Optional[int]:
        return cfg.judge_max_requests

    def set_budget(self, requests: int) -> None:
        self.budget = requests

    def start_stage(self) -> None:
        """A new run (a kept judge): an empty memo (a failure of an earlier run is asked again), usage from 0."""
        with self._lock:
            self._memo.clear()
            self.usage = Usage()
            self.budget = None

    def usage_counts(self) -> dict[str, int]:
        return dataclasses.asdict(self.usage)

    # --- one request, with the retry policy ------------------------------------------------------------

    def _body(self, messages: list[dict], *, max_tokens: int, logprobs: bool, continue_reply: bool) -> dict:
        body: dict[str, Any] = dict(model=self.cfg.judge_model, messages=messages, max_tokens=max_tokens,
                                    temperature=0.0, top_p=1.0, n=1)
        if self.cfg.judge_seed is not None:
            body["seed"] = self.cfg.judge_seed
        if logprobs:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        extra = dict(self.cfg.judge_extra_body)
        if continue_reply:
            # vLLM's (and SGLang's) way to continue the last assistant message instead of starting a new one;
            # the OpenAI API itself does not continue a message (a reply prefix needs such a server).
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if extra:
            body["extra_body"] = extra
        return body

    def _spend(self) -> None:
        with self._lock:
            if self.budget is not None and self.usage.requests >= self.budget:
                raise BudgetReached(self.cfg.judge_max_requests)
            self.usage.requests += 1

    def request(self, body: dict, parse: Callable[[Any], Any]) -> Any:
        """Send `body` (retrying as the module docstring says) and return `parse(response)`; a response that fails
        to parse (BadResponse) is retried like a transport failure. Answers (and failures for good) are memoised
        by the body's digest, so a batch judged again sample by sample (bench_lib.judge_stage) never pays twice;
        the memo lasts one judge stage (`start_stage`)."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            if digest in self._memo:  # answered (or failed for good) in this stage already
                self._memo.move_to_end(digest)
                found = self._memo[digest]
                if isinstance(found, TransportError):
                    raise type(found)(str(found))
                return found
        last: Optional[TransportError] = None
        for retry in range(self.cfg.judge_max_retries + 1):
            if retry:
                with self._lock:
                    self.usage.retries += 1
            self._spend()
            wait = None
            try:
                response = self._client.chat.completions.create(**body)
                usage = getattr(response, "usage", None)
                if usage is not None:
                    with self._lock:
                        self.usage.prompt_tokens += usage.prompt_tokens or 0
                        self.usage.completion_tokens += usage.completion_tokens or 0
                out = parse(response)
            except BadResponse as err:
                last = BadResponse(self._scrub(str(err)))
            except BudgetReached:
                raise
            except Exception as err:
                kind, retryable, wait = classify(err)
                last = kind(_describe_error(err, self._scrub))
                if not retryable:
                    break
            else:
                self._remember(digest, out)
                return out
            if retry < self.cfg.judge_max_retries:
                time.sleep(min(wait, MAX_WAIT_S) if wait is not None else backoff_s(retry, self._rng))
        with self._lock:
            self.usage.failures += 1
        failure = type(last)(f"the judge server failed {retry + 1} time(s): {last}")
        self._remember(digest, failure)
        raise failure

    def _remember(self, digest: str, out: Any) -> None:
        with self._lock:
            self._memo[digest] = out
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)

    # --- generate mode ---------------------------------------------------------------------------------

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        def one(prompt: Prompt) -> Completion:  # a started reply (`Prompt.reply`) is continued by the server
            body = self._body(chat_messages(prompt, reply_prefix=prompt.reply),
                              max_tokens=self.cfg.judge_max_new_tokens, logprobs=False,
                              continue_reply=bool(prompt.reply))

            def parse(response):
                usage = getattr(response, "usage", None)
                return Completion(_choice_text(response, self._scrub),
                                  prompt_tokens=getattr(usage, "prompt_tokens", None),
                                  completion_tokens=getattr(usage, "completion_tokens", None))

            return self.request(body, parse)

        return self._all(one, prompts)

    def _all(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """fn over items, `judge_concurrency` at a time, in order; the first failure (in order) is raised after
        every request has ended (none is left running)."""
        futures = [self._pool.submit(fn, item) for item in items]
        results, first = [], None
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as err:  # noqa: BLE001 - re-raised below, after the others ended
                results.append(None)
                if first is None or isinstance(err, BudgetReached) and not isinstance(first, BudgetReached):
                    first = err
        if first is not None:
            raise first
        return results

    # --- logits mode -----------------------------------------------------------------------------------

    def read_scales(self, requests: list[JudgeRequest]) -> ScaleReader:
        return _LogprobReader(self, requests)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
        _restore_logs(self._log_levels)


class _LogprobReader(ScaleReader):
    """Each row's reading of a question: one request per row that is wanted (a server has no shared cache to
    offer, so rows that are not wanted are not asked)."""

    def __init__(self, judge: OpenAIJudge, requests: list[JudgeRequest]):
        self.judge = judge
        self.requests = requests

    def read(self, prompt: ScalePrompt, rows) -> list[Optional[Reading]]:
        judge = self.judge
        steps = 2 if prompt.scale is ZERO_TO_TEN else 1  # "10" may be "1" + "0"

        def one(k: int) -> Reading:
            reply = prompt.replies[k] if prompt.replies is not None else prompt.reply_prefix
            messages = chat_messages(self.requests[k].prompt(prompt.text), reply_prefix=reply)
            body = judge._body(messages, max_tokens=steps, logprobs=True, continue_reply=bool(reply))

            def parse(response):
                found = [[(judge._scrub(token), logprob) for token, logprob in step]
                         for step in response_steps(response)]
                if not found or not found[0]:  # a server's failure, not an answer off the scale
                    raise BadResponse("the server returned no top_logprobs" + (" for the answer's token" if found
                                                                               else ""))
                usage = getattr(response, "usage", None)
                return found, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)

            found, prompt_tokens, completion_tokens = judge.request(body, parse)
            return dataclasses.replace(scale_reading(found, prompt.scale), prompt_tokens=prompt_tokens,
                                       completion_tokens=completion_tokens)

        out: list[Optional[Reading]] = [None] * len(self.requests)
        for k, reading in zip(rows, judge._all(one, list(rows))):
            out[k] = reading
        return out


def _listed_model(client: Any, model: str, scrub: _Scrub) -> dict[str, Any]:
    """What the server's /v1/models says about `model`: its entry, or {"listed": False} (`transformers serve` does
    not list a local folder it serves by another name; that is not an error); scrubbed of the key."""
    import openai

    try:
        page = client.models.list()
    except openai.NotFoundError:
        return {"listed": False, "models_endpoint": False}
    for entry in page.data:
        if entry.id == model:
            info = {k: v for k, v in entry.model_dump().items() if k in ("id", "owned_by", "created", "root",
                                                                        "max_model_len")}
            return scrub.deep({"listed": True, **info})
    return scrub.deep({"listed": False, "served": [entry.id for entry in page.data][:20]})
