"""The `openai` judge's pure parts: its config (the key is never a value), Retry-After, and logits mode's reading of
`top_logprobs`. No server with log-probabilities runs on these CPUs (`transformers serve` returns none), so the
readings are tested on chat completions written to OpenAI's documented schema, each fixture naming its source; the
real-server tests are in tests/test_judge_server.py."""

import contextlib
import email.utils
import json
import logging
import math
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def test_a_token_without_top_logprobs_keeps_its_place_and_the_answer_is_never_read_from_the_next_token():
    # a server that sends fewer top_logprobs than asked, down to none for one token: a "10" whose "1" came back
    # with none is not read as "0" (the next token's top-k moved into the answer's place)
    fixture = completion([[("1", 0.9)], [("0", 0.9), ("5", 0.1)]])
    fixture["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = []
    from openai.types.chat import ChatCompletion

    steps = response_steps(ChatCompletion.model_validate(fixture))
    assert len(steps) == 2 and steps[0] == []
    assert read(fixture, ZERO_TO_TEN).mass == 0.0  # nothing read: off-format, asked again
    fewer = read(completion([[("4", 0.6)]]), ONE_TO_FIVE)  # one entry of the 20 asked for
    assert fewer.value == 4.0 and fewer.mass == pytest.approx(0.6)


def test_log_probabilities_that_are_no_probabilities_give_no_reading():
    # a broken server: NaN, or a log-probability above 0, in the answer's token or in the "0" after a "1" is not a
    # finite reading (judge_failed, never filled in), never a confident 10
    for steps in ([[("4", math.nan), ("5", -1.0)]], [[("4", 0.7), ("5", -1.0)]],
                  [[("1", -0.1), ("2", -3.0)], [("0", math.nan)]], [[("1", -0.1)], [("0", 0.5), ("5", -2.0)]]):
        scale = ZERO_TO_TEN if len(steps) == 2 else ONE_TO_FIVE
        reading = scale_reading(steps, scale)
        assert not math.isfinite(reading.value) and not math.isfinite(reading.mass)


def test_retry_after_takes_seconds_milliseconds_or_a_date():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_s({"retry-after": when}) <= 31
    assert retry_after_s({}) is None and retry_after_s({"retry-after": "soon"}) is None


BASE = {"dataset": "data/demo/manifest.jsonl", "editor": "identity", "judge": "openai",
        "judge_model": "gpt-4.1-2025-04-14", "judge_base_url": "https://api.openai.com/v1"}


@pytest.mark.parametrize("value", ["sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
                                   "a9f8c7e6d5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0", "Bearer abc", "sk_live_abc123",
                                   "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "A9F8C7E6-D5B4-A3F2-E1D0-C9B8A7F6E5D4"])
def test_a_key_is_never_accepted_as_the_key_variable(value):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "judge_api_key_env": value})
    assert "NAME of an environment variable" in str(err.value) and value not in str(err.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, "judge_base_url": "https://user:s3cret@api.example.com/v1"})
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/v1", "http://[::1/v1"])  # :99999: the command-line test below
def test_a_url_with_a_bad_port_is_a_config_error(url):
    with pytest.raises(ConfigError, match="judge_base_url"):
        config_from_dict({**BASE, "judge_base_url": url})


def test_a_bad_port_on_the_command_line_is_one_line_and_exit_2():
    from conftest import assert_one_line, probe

    result, imported, errors = probe("--config", "configs/judge_server.yaml", "--judge_base_url",
                                     "http://127.0.0.1:99999/v1")
    assert_one_line(result, errors, "judge_base_url")
    assert "torch" not in imported


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "AZURE_OPENAI_API_KEY_FOR_JUDGE_SERVER", "JUDGE_KEY_2",
                                  "my_key"])
def test_a_key_variable_name_is_accepted(name):
    cfg = config_from_dict({**BASE, "judge_api_key_env": name, "judge_price_per_mtok":
                            {"prompt": 2.0, "completion": 8.0}})
    assert cfg.judge_backend.judge_api_key_env == name


def test_the_report_prices_the_tokens_the_server_charged():
    from bench_lib.report import judge_usage, judge_usage_lines

    # the rows' tokens are what each answer cost once; the bill is what each rank was charged (a row answered from
    # the memo, or a batch judged again sample by sample, is not charged twice)
    rows = [{"judge_tokens": {"prompt": 1_000_000, "completion": 250_000}}, {"judge_tokens": None},
            {"judge_tokens": {"prompt": 500_000, "completion": None}}]
    baselines = {"blank": [{"judge_tokens": {"prompt": 500_000, "completion": 50_000}}]}
    per_rank = [{"judge_requests": 7, "judge_retries": 2, "judge_failures": 1, "judge_prompt_tokens": 1_500_000,
                 "judge_completion_tokens": 200_000},
                {"judge_requests": 5, "judge_retries": 0, "judge_failures": 0, "judge_prompt_tokens": 500_000,
                 "judge_completion_tokens": 100_000}]
    usage = judge_usage(rows, baselines, per_rank, {"prompt": 2.0, "completion": 8.0})
    assert (usage["requests"], usage["retries"], usage["failed_requests"]) == (12, 2, 1)
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["samples_with_tokens"]) == (2_000_000, 300_000, 3)
    assert usage["cost"] == 2 * 2.0 + 0.3 * 8.0
    assert "12 requests" in judge_usage_lines(usage)[1] and "cost 6.4000" in judge_usage_lines(usage)[1]
    assert judge_usage(rows, {}, [{"judged": 3}], None) is None  # an in-process judge: no bill


# --- a hostile server: what it sends back is never trusted ------------------------------------------------

HOSTILE_KEY_ENV = "BENCH_TEST_HOSTILE_KEY"
SCORES = '{"instruction": 7, "consistency": 7, "quality": 7}'


class HostileServer(ThreadingHTTPServer):
    """A tiny OpenAI-compatible server that answers every judgement with `SCORES`, except as its `mode` says:
    echo (the Authorization key after the answer), refusal (no content; a refusal of 185 "x" then the key),
    errtrunc (a 500 whose message is 185 "x" then the key), echomodels (/v1/models lists the key), flaky (a 500
    to every request with an image while `fail` is set)."""

    daemon_threads = True

    def __init__(self, mode: str):
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.mode, self.fail, self.posts = mode, True, 0  # posts: requests with an image

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class HostileHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        key = self.headers.get("Authorization", "")[len("Bearer "):]
        entries = [{"id": "m", "object": "model", "owned_by": "org"}]
        if self.server.mode == "echomodels":
            entries = [{"id": "m", "object": "model", "owned_by": key}, {"id": "x" + key, "object": "model"}]
        self._send(200, {"object": "list", "data": entries})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        key, mode = self.headers.get("Authorization", "")[len("Bearer "):], self.server.mode
        images = "image_url" in json.dumps(body["messages"])
        self.server.posts += images  # the judgements (the preflight's request shows no image)
        if mode == "errtrunc" and images:
            return self._send(500, {"error": {"message": "x" * 185 + " key " + key}})
        if mode == "flaky" and images and self.server.fail:
            return self._send(500, {"error": {"message": "temporary"}})
        message = {"role": "assistant", "content": SCORES + (" your key is " + key if mode == "echo" else "")}
        if mode == "refusal" and images:
            message = {"role": "assistant", "content": None, "refusal": "x" * 185 + " " + key}
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


@contextlib.contextmanager
def serving(mode: str):
    """A `HostileServer` in `mode`, answering in a thread until the block ends."""
    server = HostileServer(mode)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile():
    with contextlib.ExitStack() as stack:
        yield lambda mode: stack.enter_context(serving(mode))


def server_run(url: str, out, **extra) -> dict:
    return {"dataset": "data/demo/manifest.jsonl", "output_dir": str(out), "editor": "identity", "limit": 2,
            "baselines": "", "gallery": False, "judge": "openai", "judge_model": "m", "judge_base_url": url,
            "judge_api_key_env": HOSTILE_KEY_ENV, "judge_mode": "generate", "judge_max_retries": 0, **extra}


def key_pieces(key: str, size: int = 6) -> list[str]:
    """Every `size`-character piece of the key: a text holding one holds part of the key."""
    return [key[i:i + size] for i in range(len(key) - size + 1)]


def assert_no_key(key: str, out, *texts: str):
    pieces = key_pieces(key)
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes().decode("utf-8", "replace")
            assert not [p for p in pieces if p in data], path
    for text in texts:
        assert not [p for p in pieces if p in text], text


@pytest.mark.parametrize("mode", ["echo", "refusal", "errtrunc", "echomodels"])
def test_nothing_the_server_sends_back_writes_the_key(mode, hostile, tmp_path, monkeypatch, caplog, capsys):
    """The key comes back in an answer, a refusal, an error message (cut after 200 characters, the key across
    the cut) or the /v1/models list: no file of the run, no log line holds any part of it."""
    import bench_lib
    from bench_lib.failures import RunFailed

    key = "zzSECRETzz" + secrets.token_hex(16)
    monkeypatch.setenv(HOSTILE_KEY_ENV, key)
    caplog.set_level(logging.INFO)
    server = hostile(mode)
    out = tmp_path / "out"
    # every sample judge_failed (nothing parses, or nothing is answered), but for echomodels
    with pytest.raises(RunFailed) if mode != "echomodels" else contextlib.nullcontext():
        bench_lib.evaluate(server_run(server.url, out))
    records = [json.loads(line) for path in (out / "records").glob("*.judge.*.jsonl")
               for line in path.read_text().splitlines()]
    assert server.posts >= 2 and len(records) == 2
    if mode in ("refusal", "errtrunc"):  # the key's place is marked, within the 200 characters kept
        assert all("x" * 185 in r["error"] and "***" in r["error"] for r in records), records
    captured = capsys.readouterr()
    assert_no_key(key, out, caplog.text, captured.out, captured.err)
    if mode == "echo":
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert all(r["judge_raw"] and "your key is ***" in r["judge_raw"][0] for r in rows), rows


def test_the_bill_counts_each_request_once_and_the_log_levels_are_given_back(hostile, tmp_path, monkeypatch):
    """The identity baseline's judgements are the identity editor's requests again: answered from the judge's memo,
    not sent, not charged, not counted twice. The HTTP client's loggers are as the caller left them."""
    import bench_lib

    monkeypatch.setenv(HOSTILE_KEY_ENV, "k")
    server = hostile("ok")
    before = {name: logging.getLogger(name).level for name in ("httpx", "openai")}
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    try:
        result = bench_lib.evaluate(server_run(server.url, tmp_path / "out", baselines="identity",
                                               judge_price_per_mtok={"prompt": 1.0, "completion": 2.0}))
        assert logging.getLogger("httpx").level == logging.DEBUG
        assert logging.getLogger("openai").level == before["openai"]
    finally:
        logging.getLogger("httpx").setLevel(before["httpx"])
    usage = result.report["judge_usage"]
    assert server.posts == usage["requests"] == 2  # the baseline's two judgements were not sent
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (2 * 10, 2 * 5), usage
    assert usage["cost"] == (20 * 1.0 + 10 * 2.0) / 1e6
