"""The `openai` judge against a real server: `transformers serve` (transformers[serving]) serving the tiny Qwen3-VL
judge on 127.0.0.1, one process for the whole module, stopped at the end. Faults are injected by a small threaded
HTTP proxy of this module's own between the harness and that server (429 with Retry-After, 500, a response
slower than the timeout, a dropped connection, a truncated body, a non-JSON body, an empty choice).

`transformers serve` returns no log-probabilities, so these runs are in generate mode; logits mode's parsing is
tested on documented responses in tests/test_openai_judge.py.
"""

import http.client
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from launch import ROOT, accelerate_launch
from test_multiprocess import make_manifest

KEY_ENV = "BENCH_TEST_JUDGE_KEY"
NUM_SAMPLES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_cache, tmp_path_factory):
    """(base URL, served model name): `transformers serve` on the tiny judge's folder (it serves a local folder
    under its path)."""
    from bench_lib.models import resolve_model

    folder = resolve_model("tiny:qwen3-vl")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", folder, "--host",
                                 "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"transformers serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"transformers serve did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_recipe(folder: Path, manifest: Path, url: str, model: str, **extra) -> Path:
    values = {"dataset": str(manifest), "output_dir": str(folder / "out"), "editor": "identity", "baselines": "",
              "judge": "openai", "judge_model": model, "judge_base_url": url, "judge_api_key_env": KEY_ENV,
              "judge_mode": "generate", "judge_max_new_tokens": 16, "judge_batch_size": 4, "judge_concurrency": 2,
              "judge_timeout_s": 60, **extra}
    path = folder / "recipe.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def same_answers(a: list[str], b: list[str]) -> bool:
    """The same raw answers, but for whitespace at either end: `transformers serve` passes a Qwen model's answer
    through its Qwen response template (transformers/cli/serving/utils.py, `_RESPONSE_TEMPLATE_FALLBACKS`),
    whose content region drops the whitespace at its start and before the end marker; the tokens are the same."""
    return [t.strip() for t in a] == [t.strip() for t in b]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, server):
    """The in-process transformers judge (qwen_vl) on the same weights, greedy, one prompt per forward pass (as the
    server answers one request at a time): each sample's raw answers, by id."""
    from bench_lib import parse_config, run
    from bench_lib.failures import RunFailed

    folder = tmp_path_factory.mktemp("in-process")
    manifest = make_manifest(folder, NUM_SAMPLES)
    recipe = write_recipe(folder, manifest, "http://unused.invalid/v1", "tiny:qwen3-vl", judge="qwen_vl",
                          judge_dtype="float32", judge_batch_size=1)
    with pytest.raises(RunFailed, match="nothing was scored"):  # a random tiny judge writes no parseable answer
        run(parse_config(["--config", str(recipe)]))
    rows = rows_of(folder / "out")
    assert [r["judge_parse"] for r in rows] == ["failed"] * NUM_SAMPLES
    return manifest, {r["id"]: r["judge_raw"] for r in rows}


def test_two_process_run_through_the_server_matches_the_in_process_judge(server, reference, tmp_path):
    url, model = server
    manifest, expected = reference
    key = "sk-test-" + secrets.token_hex(16)
    recipe = write_recipe(tmp_path, manifest, url, model)
    result = accelerate_launch(2, ["--config", str(recipe)], timeout=600, check=False, env={KEY_ENV: key})
    out = tmp_path / "out"
    # Every rank finished (a random tiny judge scores nothing: the run writes its reports and exits 1 for that)
    assert result.returncode == 1, result.stderr[-4000:]
    assert "nothing was scored" in result.stderr
    assert sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json")) == [0, 1]
    rows = rows_of(out)
    assert [r["id"] for r in rows] == list(expected)
    for row in rows:  # sample by sample, the same greedy answers as the in-process judge
        assert row["status"] == "judge_failed" and row["judge_parse"] == "failed", row
        assert len(row["judge_raw"]) == 2 and same_answers(row["judge_raw"], expected[row["id"]]), \
            (row["judge_raw"], expected[row["id"]])
    assert "Traceback" not in result.stderr.split("nothing was scored")[0]  # (the launcher's own comes after)
    report = json.loads((out / "report.json").read_text())
    judge = report["provenance"]["models"]["judge"]
    assert judge["backend"] == "openai" and judge["server"] == url.rsplit("/", 1)[0]
    assert judge["served_model"]["listed"] is True and judge["served_model"]["id"] == model
    # the key is nowhere: no file in the output folder, nothing in the log
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in result.stdout and key not in result.stderr


# --- faults -----------------------------------------------------------------------------------------------


class FaultProxy(ThreadingHTTPServer):
    """Forwards to the real server; the chat requests that show an image (the judgements, not the preflight) meet
    the faults of `plan` in order of arrival, and those whose body holds `always_fail` always get a 500."""

    daemon_threads = True

    def __init__(self, upstream: str, plan: list[str], slow_s: float):
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.upstream = upstream  # host:port
        self.plan = list(plan)
        self.slow_s = slow_s
        self.always_fail = None
        self.lock = threading.Lock()
        self.seen: list[str] = []  # what each judgement request met: a fault's name or "ok"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        proxy = self.server
        fault = None
        if b"image_url" in body:
            with proxy.lock:
                if proxy.always_fail and proxy.always_fail.encode() in body:
                    fault = "always-500"
                elif proxy.plan:
                    fault = proxy.plan.pop(0)
                proxy.seen.append(fault or "ok")
        if fault in ("500", "always-500"):
            return self._reply(500, b'{"error": {"message": "injected server error"}}')
        if fault == "429":
            return self._reply(429, b'{"error": {"message": "injected rate limit"}}', {"Retry-After": "1"})
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            time.sleep(proxy.slow_s)
        if fault == "nonjson":
            return self._reply(200, b"<html>gateway says hello</html>", {"Content-Type": "text/html"})
        if fault == "empty":
            return self._reply(200, json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                                "choices": []}).encode())
        self._forward(body, truncate=fault == "truncated")

    def _forward(self, body: bytes, truncate: bool = False):
        connection = http.client.HTTPConnection(self.server.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        connection.request(self.command, self.path, body=body or None, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        if truncate:  # the full length announced, half the body sent, the connection closed
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(answer.status, data, {"Content-Type": answer.getheader("Content-Type", "application/json")})

    def _reply(self, status: int, data: bytes, headers: dict | None = None):
        try:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out): nothing to answer
            self.close_connection = True


@pytest.fixture
def proxy(server):
    upstream = server[0].split("//", 1)[1].split("/", 1)[0]
    proxy = FaultProxy(upstream, [], slow_s=4.0)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def test_budget_faults_and_resume(server, reference, proxy, tmp_path, monkeypatch, caplog):
    """A request budget stops the run with the report of what was judged (exit 1 on the command line); each fault
    ends in a retried success; a sample whose every request fails is judge_failed with the reason (no traceback);
    the resume judges again what is not ok (with a random tiny judge: every sample, as none parses) and loses
    nothing."""
    import bench_lib.judges.openai_api as openai_api
    from bench_lib import parse_config, run
    from bench_lib.failures import RunFailed

    monkeypatch.setattr(openai_api, "BACKOFF_BASE_S", 0.05)  # quick retries; Retry-After is still honoured
    url, model = server
    manifest, expected = reference
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    caplog.set_level(logging.INFO)
    # the timeout is far above a real answer's time, even on a busy CPU; the slow fault answers after it
    recipe = write_recipe(tmp_path, manifest, proxy.url, model, judge_timeout_s=15, judge_max_retries=8,
                          process_group_timeout=600)
    proxy.slow_s = 20.0
    # the budget: 5 requests for a batch of 4 samples, each needing two (its answer, then the strict re-ask of an
    # answer that did not parse): the 4 answers, then one re-ask; the batch is judged again sample by sample from
    # the answers already paid for, so exactly one sample is judged and three are left for a rerun
    with pytest.raises(RunFailed, match=r"^budget reached \(5 requests\); rerun to continue$"):
        run(parse_config(["--config", str(recipe), "--judge_max_requests", "5"]))
    assert proxy.seen == ["ok"] * 5  # not one request more
    usage = json.loads((tmp_path / "out" / "report.json").read_text())["judge_usage"]
    rows = rows_of(tmp_path / "out")
    judged = [r for r in rows if r["judge_parse"] == "failed"]
    # (a request that timed out on a busy machine is retried, and its retry is part of the budget too)
    assert len(judged) <= 1 and (usage["retries"] > 0 or len(judged) == 1)
    assert all(same_answers(r["judge_raw"], expected[r["id"]]) for r in judged)
    assert all(r["judge_tokens"]["prompt"] > 0 and r["judge_tokens"]["completion"] > 0 for r in judged)
    left = [r for r in rows if r not in judged]
    assert len(left) == NUM_SAMPLES - len(judged)
    assert all(r["error"] == "not judged: budget reached (5 requests); rerun to continue" for r in left)
    # the bill: the 5 requests charged, the 3 unjudged samples' answers too (a rerun asks them again)
    assert usage["requests"] == 5 and usage["prompt_tokens"] > sum(r["judge_tokens"]["prompt"] for r in judged)

    proxy.seen = []
    faults = ["429", "500", "slow", "drop", "truncated", "nonjson", "empty"]
    proxy.plan = list(faults)
    failing = json.loads(manifest.read_text().splitlines()[1])
    proxy.always_fail = failing["instruction"]
    with pytest.raises(RunFailed, match="nothing was scored"):
        run(parse_config(["--config", str(recipe)]))
    met = [f for f in proxy.seen if f not in ("ok", "always-500")]
    assert sorted(met) == sorted(faults)  # every fault was met once
    rows = {r["id"]: r for r in rows_of(tmp_path / "out")}
    bad = rows.pop(failing["id"])
    assert bad["status"] == "judge_failed" and bad["judge_parse"] is None
    assert bad["error"].startswith("ServerError: the judge server failed 9 time(s): HTTP 500"), bad["error"]
    for sample_id, row in rows.items():  # every other sample: answered as without faults
        assert row["judge_parse"] == "failed" and same_answers(row["judge_raw"], expected[sample_id]), row
    assert "Traceback" not in caplog.text and key not in caplog.text

    proxy.always_fail, proxy.seen = None, []
    with pytest.raises(RunFailed, match="nothing was scored"):
        run(parse_config(["--config", str(recipe)]))
    retries = json.loads((tmp_path / "out" / "report.json").read_text())["judge_usage"]["retries"]
    assert proxy.seen == ["ok"] * (2 * NUM_SAMPLES + retries)  # each sample asked, and asked again (strict)
    rows = {r["id"]: r for r in rows_of(tmp_path / "out")}
    for sample_id, row in rows.items():
        assert row["judge_parse"] == "failed" and same_answers(row["judge_raw"], expected[sample_id])
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


CANNOT_JUDGE = {  # case -> (recipe keys, what the one line says)
    "key_name": ({"judge_api_key_env": "BENCH_TEST_NO_SUCH_VARIABLE"}, "BENCH_TEST_NO_SUCH_VARIABLE is not set"),
    "dead_url": ({"judge_base_url": f"http://127.0.0.1:{free_port()}/v1"}, "cannot be reached"),
    "no_such_host": ({"judge_base_url": "http://no-such-host.invalid:8000/v1"}, "cannot be reached"),  # DNS
    "unknown_model": ({"judge_model": "no-such-model"}, "does not serve `judge_model` 'no-such-model'"),
    "no_logprobs": ({"judge_mode": "logits"}, "returned no top_logprobs"),  # transformers serve returns none
}


def test_a_server_that_cannot_judge_is_one_line_and_exit_2_before_any_edit(server, tmp_path, monkeypatch):
    """Each case is refused by the preflight (in process: the checks the command line runs first), without a
    retry; the command line turns one into one line and exit code 2 before anything is written."""
    from bench_lib import parse_config
    from bench_lib.config import ConfigError
    from bench_lib.preflight import preflight

    url, model = server
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    manifest = make_manifest(tmp_path, 1)
    for case, (extra, line) in CANNOT_JUDGE.items():
        recipe = write_recipe(tmp_path, manifest, url, model, **extra)
        with pytest.raises(ConfigError) as err:
            preflight(parse_config(["--config", str(recipe)]))
        assert line in str(err.value) and key not in str(err.value), (case, str(err.value))
    recipe = write_recipe(tmp_path, manifest, url, model, **CANNOT_JUDGE["unknown_model"][0])
    done = subprocess.run([sys.executable, "run_benchmark.py", "--config", str(recipe)], cwd=ROOT,
                          env={**os.environ, KEY_ENV: key}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and CANNOT_JUDGE["unknown_model"][1] in lines[0]
    assert not (tmp_path / "out").exists()  # nothing edited, nothing written
    assert key not in done.stderr


def test_bench_judge_server(server, tmp_path, monkeypatch):
    """scripts/bench_judge_server.py's smoke test, on this module's server: every setting measured and written,
    and the server's answers checked equal to the in-process judge's inside the script."""
    from test_scripts import load_script

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    bench = load_script("bench_judge_server")
    url, folder = server
    out = tmp_path / "bench.json"
    bench.main(["--judge_model", folder, "--num_samples", "2", "--new_tokens", "4", "--concurrency", "1,2",
                "--image_side", "32", "--base_url", url, "--output", str(out)])
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["rows"]] == ["one prompt per call", "batch of 2", "judge_concurrency 1",
                                                     "judge_concurrency 2"]
    assert all(r["seconds"] > 0 for r in result["rows"]) and result["http_overhead_s_per_judgement"] is not None
