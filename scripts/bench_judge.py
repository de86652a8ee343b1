"""Measure the judge's cost per sample: logits mode, and generate mode at batch 1 and batch N.

The judge is the harness's own (`bench_lib.judges.QwenVLJudge`), on synthetic requests: a source and an edited
image of `--image_side`² random pixels (then `judge_max_pixels` applies, as in a run) and the physics rubric.
Generate mode is timed at exactly `--new_tokens` new tokens per answer (`min_new_tokens`), so random weights,
which would stop at a random point, cost what a real rationale of that length costs.

    # the tiny judge on CPU (what docs/PERFORMANCE.md reports for this machine)
    python scripts/bench_judge.py --judge_model tiny:qwen3-vl --device cpu --dtype float32
    # a real-size Qwen3-VL-8B with random weights on a GPU (same shapes, so same FLOPs, as the trained model)
    python scripts/bench_judge.py --real_size qwen3-vl-8b --device cuda --dtype bfloat16

Prints a Markdown table; `--output FILE` also writes the numbers as JSON, each measurement as soon as it is
taken (a crash later loses nothing measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib.config import JudgeConfig  # noqa: E402
from bench_lib.judge_stage import fit_pixels  # noqa: E402
from bench_lib.judges.policy import judge as judge_samples  # noqa: E402
from bench_lib.judges.qwen_vl import QwenVLConfig, QwenVLJudge, chat_messages  # noqa: E402
from bench_lib.judges.rubrics import Rubrics  # noqa: E402
from bench_lib.judging import JudgeRequest  # noqa: E402
from bench_lib.models import resolve_model  # noqa: E402
from bench_lib.protocols import PROTOCOLS, make_protocol  # noqa: E402
from bench_lib.protocols.base import SampleView  # noqa: E402
from bench_lib.store import write_json  # noqa: E402
from bench_lib.torch_utils import torch_dtype  # noqa: E402

# Qwen3-VL-8B-Instruct's published config.json (8.77B parameters); the tokenizer is the tiny one (its ids are
# valid in the 151,936-token vocabulary), the image processor the real one's settings (patch 16, merge 2).
REAL_SIZE = {
    "qwen3-vl-8b": {
        "text_config": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
                        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "head_dim": 128, "rope_parameters": {"rope_type": "default", "mrope_section": [24, 20, 20],
                                                             "mrope_interleaved": True, "rope_theta": 5e6}},
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                          "patch_size": 16, "spatial_merge_size": 2, "out_hidden_size": 4096,
                          "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]},
        "tie_word_embeddings": False,
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge_model", default="tiny:qwen3-vl", help="hub id, local path or tiny:<name>")
    parser.add_argument("--real_size", choices=sorted(REAL_SIZE), help="random weights of this real configuration")
    parser.add_argument("--text_layers", type=int, help="with --real_size: fewer decoder layers (a quick check)")
    parser.add_argument("--vision_depth", type=int, help="with --real_size: fewer vision layers (a quick check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_samples", type=int, default=64, help="timed samples per batched measurement")
    parser.add_argument("--single_samples", type=int, default=4, help="timed samples for generate at batch 1")
    parser.add_argument("--new_tokens", type=int, default=128, help="tokens per generated answer")
    parser.add_argument("--image_side", type=int, default=512)
    parser.add_argument("--judge_max_pixels", type=int, default=512 * 512)
    parser.add_argument("--modes", default="logits,generate1,generateN")
    parser.add_argument("--protocol", default="default", choices=sorted(PROTOCOLS),
                        help="the questions asked (default: the harness's three sub-scores on one view)")
    parser.add_argument("--output", type=Path)
    return parser.parse_args(argv)


def build_judge(args) -> QwenVLJudge:
    cfg = QwenVLConfig(judge_model=args.judge_model, judge_dtype=args.dtype, judge_min_digit_mass=0.0,
                       judge_max_new_tokens=args.new_tokens)
    common = JudgeConfig(judge_batch_size=args.batch_size, judge_max_pixels=args.judge_max_pixels,
                         protocol=args.protocol)
    if not args.real_size:
        return QwenVLJudge(cfg, judge=common, device=torch.device(args.device))
    from transformers import AutoProcessor, Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    spec = json.loads(json.dumps(REAL_SIZE[args.real_size]))
    if args.text_layers:
        spec["text_config"]["num_hidden_layers"] = args.text_layers
    if args.vision_depth:
        spec["vision_config"]["depth"] = args.vision_depth
        spec["vision_config"]["deepstack_visual_indexes"] = [
            i for i in spec["vision_config"]["deepstack_visual_indexes"] if i < args.vision_depth]
    processor = AutoProcessor.from_pretrained(resolve_model("tiny:qwen3-vl"))
    processor.image_processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=65536,
                                                      max_pixels=16777216, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ids = processor.tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(**spec, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                           vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(args.dtype))
    try:
        with torch.device(args.device):  # random weights straight on the device: no 17 GB download or copy
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return QwenVLJudge.from_parts(cfg, common, model, processor)


def make_requests(protocol, n: int, side: int, max_pixels: int) -> list[list[JudgeRequest]]:
    """n samples' requests (every view the protocol asks), each over its own two noise images."""
    rng = np.random.default_rng(0)

    def noise():
        return fit_pixels(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), max_pixels)

    sample = SampleView(category="physics", dimension="physics", reference_text="A flat puddle of water, no cube.",
                        instruction="Show this ice cube after an hour in the midday sun.",
                        fields={"description": "An ice cube on a wooden table.", "explanation": "Ice melts."})
    return [protocol.requests(sample, {"source": noise(), "edited": noise(), "reference": None}) for _ in range(n)]


def first_prompts(samples: list[list[JudgeRequest]]):
    """Generate mode's first prompt of each sample: its first view with the answer format's instruction."""
    return [r[0].prompt(r[0].answer_format.instruction(r[0].questions)) for r in samples]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def protocol_of(judge: QwenVLJudge):
    """The protocol `--protocol` names (it says what the synthetic samples are asked)."""
    return make_protocol(judge.judge_cfg, Rubrics(judge.judge_cfg.prompts_dir))


def run_mode(judge: QwenVLJudge, mode: str, args) -> dict:
    batch = 1 if mode == "generate1" else args.batch_size
    n = args.single_samples if mode == "generate1" else args.num_samples
    requests = make_requests(protocol_of(judge), n, args.image_side, args.judge_max_pixels)

    def one_batch(part):
        if mode == "logits":
            judge_samples(judge, part, mode="logits")
        else:  # one view's answer (the default protocol has one view)
            judge.generate(first_prompts(part), min_new_tokens=args.new_tokens)

    one_batch(requests[:batch])  # warm-up: kernels, allocator, caches
    seconds = timed(lambda: [one_batch(requests[i:i + batch]) for i in range(0, n, batch)], args.device)
    return {"mode": "logits" if mode == "logits" else "generate", "batch_size": batch, "samples": n,
            "new_tokens": None if mode == "logits" else args.new_tokens, "seconds": round(seconds, 3),
            "s_per_sample": seconds / n}


def prompt_tokens(judge: QwenVLJudge, args) -> tuple[int, int]:
    """(all tokens, image tokens) of one generate-mode prompt: what the timings above paid for."""
    (prompt,) = first_prompts(make_requests(protocol_of(judge), 1, args.image_side, args.judge_max_pixels))
    inputs = judge.processor.apply_chat_template(
        [chat_messages(prompt)], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    ids = inputs["input_ids"][0]
    return int(ids.shape[0]), int((ids == judge.model.config.image_token_id).sum())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    judge = build_judge(args)
    params = sum(p.numel() for p in judge.model.parameters())
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    name = f"{args.real_size} (random weights)" if args.real_size else args.judge_model
    tokens, image_tokens = prompt_tokens(judge, args)
    summary = {"judge": name, "parameters": params, "device": device_name, "dtype": args.dtype,
               "image_side": args.image_side, "judge_max_pixels": args.judge_max_pixels,
               "prompt_tokens": tokens, "image_tokens": image_tokens, "command": "python scripts/bench_judge.py "
               + " ".join(sys.argv[1:] if argv is None else argv), "results": [],
               "torch": torch.__version__}
    if args.output:
        write_json(args.output, summary)
    print(f"judge: {name} ({params / 1e9:.3g}B parameters), {device_name}, {args.dtype}, two {args.image_side}² "
          f"images, prompt {tokens} tokens ({image_tokens} of them image tokens)")
    print("| mode | batch | new tokens | samples | s/sample |")
    print("|---|---:|---:|---:|---:|", flush=True)
    for mode in args.modes.split(","):
        r = run_mode(judge, mode, args)
        summary["results"].append(r)
        if args.output:  # each measurement as soon as it is taken: a later crash loses nothing measured
            write_json(args.output, summary)
        print(f"| {r['mode']} | {r['batch_size']} | {r['new_tokens'] or '–'} | {r['samples']} | "
              f"{r['s_per_sample']:.4g} |", flush=True)
    results = summary["results"]
    logits = [r["s_per_sample"] for r in results if r["mode"] == "logits"]
    for r in results:
        if r["mode"] == "generate" and logits:
            print(f"generate at batch {r['batch_size']}: {r['s_per_sample'] / logits[0]:.1f}x logits mode per sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
