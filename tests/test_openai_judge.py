"""The `openai` judge's pure parts: its config (the key is never a value), Retry-After, and logits mode's reading of
`top_logprobs`. No server with log-probabilities runs on these CPUs (`transformers serve` returns none), so the
readings are tested on chat completions written to OpenAI's documented schema, each fixture naming its source; the
real-server tests are in tests/test_judge_server.py."""

import email.utils
import math
import time

import pytest

from bench_lib.config import ConfigError
from bench_lib.judges.openai_api import response_steps, retry_after_s, scale_reading
from bench_lib.judging import ONE_TO_FIVE, YES_NO, ZERO_TO_TEN
from bench_lib.options import config_from_dict

# The chat completion object, `choices[].logprobs.content[]`: per generated token its `token`, `logprob`, `bytes`
# and `top_logprobs` (the most likely tokens at that position, each with `token`, `logprob`, `bytes`; at most 20;
# a logprob of -9999.0 marks a very unlikely token).
SCHEMA = "https://platform.openai.com/docs/api-reference/chat/object (choices[].logprobs.content[].top_logprobs)"


def completion(steps: list[list[tuple[str, float]]], *, source: str = SCHEMA) -> dict:
    """A chat completion as the API returns it; `steps[t]`: the (token, probability) top-k at generated token t,
    the first entry being the token generated."""
    def entry(token, p):
        return {"token": token, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(token.encode())}

    content = [{**entry(*top[0]), "top_logprobs": [entry(t, p) for t, p in top]} for top in steps]
    return {"id": "chatcmpl-fixture", "object": "chat.completion", "created": 0, "model": "gpt-4.1-2025-04-14",
            "_source": source,
            "choices": [{"index": 0, "finish_reason": "length", "logprobs": {"content": content, "refusal": None},
                         "message": {"role": "assistant", "content": "".join(top[0][0] for top in steps)}}],
            "usage": {"prompt_tokens": 812, "completion_tokens": len(steps), "total_tokens": 812 + len(steps)}}


def read(fixture: dict, scale):
    from openai.types.chat import ChatCompletion

    return scale_reading(response_steps(ChatCompletion.model_validate(fixture)), scale)


def test_a_0_10_answer_from_a_tokenizer_that_writes_10_as_one_token():
    # OpenAI's tokenizers (o200k) write "10" as one token; " 8" and "8" are the same answer
    reading = read(completion([[("8", 0.5), ("7", 0.2), (" 8", 0.1), ("10", 0.1), ("The", 0.05), ("x", 1e-9)]]),
                   ZERO_TO_TEN)
    assert reading.mass == pytest.approx(0.9)
    assert reading.distribution[8] == pytest.approx(0.6 / 0.9) and reading.distribution[10] == pytest.approx(0.1 / 0.9)
    assert reading.value == pytest.approx((8 * 0.6 + 7 * 0.2 + 10 * 0.1) / 0.9)


def test_a_0_10_answer_from_a_tokenizer_that_writes_10_as_1_then_0():
    # Qwen's tokenizers (a vLLM server): "1" then "0" is 10; after "1", an end of answer is 1, "1" (11) is no answer
    reading = read(completion([[("1", 0.6), ("9", 0.3), ("Score", 0.1)],
                               [("0", 0.5), ("<|im_end|>", 0.4), ("1", 0.1)]]), ZERO_TO_TEN)
    ten = 0.5 / 0.9
    assert reading.mass == pytest.approx(0.9)
    assert reading.distribution[10] == pytest.approx(0.6 * ten / 0.9)
    assert reading.distribution[1] == pytest.approx(0.6 * (1 - ten) / 0.9)
    assert reading.value == pytest.approx((1 * 0.6 * (1 - ten) + 10 * 0.6 * ten + 9 * 0.3) / 0.9)


def test_yes_no_counts_every_spelling_and_the_rest_is_outside_the_scale():
    reading = read(completion([[("Yes", 0.7), (" no", 0.2), ("yes", 0.05), ("Maybe", 0.05)]]), YES_NO)
    assert reading.mass == pytest.approx(0.95)
    assert reading.distribution == pytest.approx([0.2 / 0.95, 0.75 / 0.95])
    assert reading.value == pytest.approx(0.75 / 0.95)


def test_a_very_unlikely_token_counts_nothing_and_an_off_format_answer_has_no_mass():
    reading = read(completion([[("4", 0.9), ("5", 0.1), ("3", 0.0)]]), ONE_TO_FIVE)  # -9999.0: exp is 0
    assert reading.value == pytest.approx(4.1) and reading.distribution[2] == 0.0
    off = read(completion([[("The", 0.6), ("I", 0.4)]]), ONE_TO_FIVE)
    assert off.mass == 0.0 and "'The' 0.600" in off.instead()


def test_a_completion_without_logprobs_has_no_steps():
    # `transformers serve` (and the OpenAI API when logprobs is not asked for) returns "logprobs": null
    fixture = completion([[("7", 1.0)]])
    fixture["choices"][0]["logprobs"] = None
    from openai.types.chat import ChatCompletion

    assert response_steps(ChatCompletion.model_validate(fixture)) == []


def test_retry_after_takes_seconds_milliseconds_or_a_date():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s({"retry-after": when}) <= 31
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


BASE = {"dataset": "data/demo/manifest.jsonl", "editor": "identity", "judge": "openai",
        "judge_model": "gpt-4.1-2025-04-14", "judge_base_url": "https://api.openai.com/v1"}


@pytest.mark.parametrize("value", ["sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
                                   "a9f8c7e6d5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0", "Bearer abc"])
def test_a_key_is_never_accepted_as_the_key_variable(value):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "judge_api_key_env": value})
    assert "NAME of an environment variable" in str(err.value) and value not in str(err.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "judge_base_url": "https://user:s3cret@api.example.com/v1"})
    assert "s3cret" not in str(err.value)


def test_a_key_variable_name_is_accepted():
    cfg = config_from_dict({**BASE, "judge_api_key_env": "OPENAI_API_KEY", "judge_price_per_mtok":
                            {"prompt": 2.0, "completion": 8.0}})
    assert cfg.judge_backend.judge_api_key_env == "OPENAI_API_KEY"


def test_the_report_prices_the_tokens_of_every_judged_sample():
    from bench_lib.report import judge_usage, judge_usage_lines

    rows = [{"judge_tokens": {"prompt": 1_000_000, "completion": 250_000}}, {"judge_tokens": None},
            {"judge_tokens": {"prompt": 500_000, "completion": None}}]
    baselines = {"blank": [{"judge_tokens": {"prompt": 500_000, "completion": 50_000}}]}
    per_rank = [{"judge_requests": 7, "judge_retries": 2, "judge_failures": 1}, {"judge_requests": 5,
                                                                                 "judge_retries": 0,
                                                                                 "judge_failures": 0}]
    usage = judge_usage(rows, baselines, per_rank, {"prompt": 2.0, "completion": 8.0})
    assert (usage["requests"], usage["retries"], usage["failed_requests"]) == (12, 2, 1)
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["samples_with_tokens"]) == (2_000_000, 300_000, 3)
    assert usage["cost"] == 2 * 2.0 + 0.3 * 8.0
    assert "12 requests" in judge_usage_lines(usage)[1] and "cost 6.4000" in judge_usage_lines(usage)[1]
    assert judge_usage(rows, {}, [{"judged": 3}], None) is None  # an in-process judge: no bill
