"""Judgements per second through an OpenAI-compatible judge server vs the in-process judge, same weights.

Starts `transformers serve` on 127.0.0.1 (a free port) with the judge's folder, and times generate-mode answers
to the same prompts (scripts/bench_judge.py's synthetic requests: two noise images and the physics rubric):

- in-process: the `qwen_vl` judge, one prompt per call (what one request costs the server), and all at once;
- through the server: the `openai` judge at each `--concurrency` (requests in flight; the prompts are one batch).

The HTTP path's overhead per judgement is the server's seconds per judgement at concurrency 1 minus the in-process
judge's at batch 1 (data-URI encoding, HTTP, the server's own request handling and decoding). Both generate the
same greedy tokens (tests/test_judge_server.py), so they do the same work.

    python scripts/bench_judge_server.py --judge_model tiny:qwen3-vl --num_samples 16 --concurrency 1,4,16

`--base_url` times a server already serving the judge's folder instead of starting one.

Prints a Markdown table; `--output FILE` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_judge import first_prompts, make_requests  # noqa: E402

from bench_lib.config import JudgeConfig  # noqa: E402
from bench_lib.judges.openai_api import OpenAIJudge, OpenAIJudgeConfig  # noqa: E402
from bench_lib.judges.qwen_vl import QwenVLConfig, QwenVLJudge  # noqa: E402
from bench_lib.judges.rubrics import Rubrics  # noqa: E402
from bench_lib.models import resolve_model  # noqa: E402
from bench_lib.protocols import make_protocol  # noqa: E402
from bench_lib.store import write_json  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge_model", default="tiny:qwen3-vl", help="local folder or tiny:<name>")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=32, help="max_tokens per answer")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--image_side", type=int, default=256)
    parser.add_argument("--judge_max_pixels", type=int, default=512 * 512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--base_url", help="a server already serving the judge's folder (default: start one)")
    return parser.parse_args(argv)


def start_server(folder: str, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", folder, "--host", "127.0.0.1",
                             "--port", str(port), "--device", "cpu", "--dtype", "float32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("transformers serve did not start") from None
            time.sleep(0.5)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = resolve_model(args.judge_model)
    common = JudgeConfig(judge_mode="generate", judge_batch_size=args.num_samples,
                         judge_max_pixels=args.judge_max_pixels)
    protocol = make_protocol(common, Rubrics(common.prompts_dir))
    prompts = first_prompts(make_requests(protocol, args.num_samples, args.image_side, args.judge_max_pixels))
    n = len(prompts)
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                 "torch_threads": args.threads}, "samples": n, "max_tokens": args.new_tokens,
                     "rows": []}

    def record(path: str, setting: str, seconds: float, tokens=None) -> None:
        row = {"path": path, "setting": setting, "seconds": round(seconds, 3),
               "judgements_per_s": round(n / seconds, 3), "s_per_judgement": round(seconds / n, 4),
               "completion_tokens": tokens}
        results["rows"].append(row)
        print(f"| {path} | {setting} | {row['judgements_per_s']} | {row['s_per_judgement']} |", flush=True)
        if args.output:
            write_json(args.output, results)

    print("| path | setting | judgements/s | s/judgement |\n|---|---|---:|---:|", flush=True)
    local = QwenVLJudge(QwenVLConfig(judge_model=folder, judge_dtype="float32", judge_max_new_tokens=args.new_tokens),
                        judge=common, device=torch.device("cpu"))
    local.generate(prompts[:1])  # warm-up
    start = time.perf_counter()
    texts_local = [local.generate([p])[0].text for p in prompts]
    record("in-process (qwen_vl)", "one prompt per call", time.perf_counter() - start)
    start = time.perf_counter()
    local.generate(prompts)
    record("in-process (qwen_vl)", f"batch of {n}", time.perf_counter() - start)
    local.close()

    proc, url = (None, args.base_url) if args.base_url else start_server(folder, args.threads)
    try:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            cfg = OpenAIJudgeConfig(judge_model=folder, judge_base_url=url, judge_concurrency=concurrency,
                                    judge_max_new_tokens=args.new_tokens)
            remote = OpenAIJudge(cfg, judge=common)
            remote.generate(prompts[:1])  # warm-up (also memoised: the timed prompts are new to it below)
            remote._memo.clear()
            start = time.perf_counter()
            completions = remote.generate(prompts)
            seconds = time.perf_counter() - start
            assert [c.text.strip() for c in completions] == [t.strip() for t in texts_local], \
                "the server's answers differ from the in-process judge's"
            record("server (openai -> transformers serve)", f"judge_concurrency {concurrency}", seconds,
                   sum(c.completion_tokens or 0 for c in completions))
            remote.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    rows = {(r["path"].split(" ")[0], r["setting"]): r for r in results["rows"]}
    overhead = rows[("server", "judge_concurrency 1")]["s_per_judgement"] - \
        rows[("in-process", "one prompt per call")]["s_per_judgement"] if ("server", "judge_concurrency 1") in rows \
        else None
    results["http_overhead_s_per_judgement"] = None if overhead is None else round(overhead, 4)
    print(f"\nHTTP path overhead per judgement (server at concurrency 1 - in-process one prompt per call): "
          f"{results['http_overhead_s_per_judgement']} s")
    if args.output:
        write_json(args.output, results)


if __name__ == "__main__":
    main()
