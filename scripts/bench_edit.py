"""Measure the edit stage: the harness's overhead around the pipeline, the barrier wait, the model switch, and
what each of diffusers' speed options buys (and how far it moves the pixels).

One run measures, on the same samples, seeds and call arguments:
- `direct`: the pipeline called directly, one sample per call (a CPU generator seeded as the harness seeds it);
- `harness`: the same pipeline object through the harness's edit stage (decode, edit, flag check, PNG write,
  fsync'd records, the per-batch barrier), in this process's world (run it under `accelerate launch` with
  several processes to see barrier waits);
- the model switch: freeing the editor and loading the judge (`--judge_model`);
- each `--options` entry applied to the same pipeline: seconds per image, its speed-up over `direct`, and the
  largest pixel difference from the plain edits (0..255).

    # tiny models on CPU (docs/PERFORMANCE.md has this machine's numbers)
    python scripts/bench_edit.py --device cpu --dtype float32
    # real-size Qwen-Image-Edit with random weights on a GPU (same shapes, so the same FLOPs, as the trained model)
    python scripts/bench_edit.py --real_size qwen-image-edit --device cuda --dtype bfloat16 --steps 50 \\
        --kwargs '{"true_cfg_scale": 4.0, "negative_prompt": " "}' --image_side 1024 \\
        --options attention_backend=_native_cudnn,compile=regional

Prints a Markdown table; `--output FILE` also writes the numbers as JSON, each measurement as soon as it is
taken (a crash later loses nothing measured).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench_lib.config import JudgeConfig  # noqa: E402
from bench_lib.data import ImageRef, Sample  # noqa: E402
from bench_lib.distributed import Distributed  # noqa: E402
from bench_lib.edit_stage import EditJob, EditStage  # noqa: E402
from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor, apply_speed_options  # noqa: E402
from bench_lib.judges.qwen_vl import QwenVLConfig, QwenVLJudge  # noqa: E402
from bench_lib.models import resolve_model  # noqa: E402
from bench_lib.store import RunFolder, sample_seed, save_png, write_json  # noqa: E402
from bench_lib.torch_utils import torch_dtype  # noqa: E402

# Qwen-Image-Edit's published configurations (transformer 20.4B, Qwen2.5-VL-7B text encoder, the Qwen-Image VAE);
# the tokenizer and processor are the tiny ones (their ids are valid in the real 152k vocabulary).
REAL_SIZE = {
    "qwen-image-edit": {
        "transformer": {"patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60,
                        "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
                        "axes_dims_rope": (16, 56, 56)},
        "vae": {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                "temperal_downsample": [False, True, True], "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16},
        "text": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                 "num_attention_heads": 28, "num_key_value_heads": 4,
                 "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}},
        "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                   "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31]},
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editor_model", default="tiny:qwen-image-edit", help="hub id, folder or tiny:<name>")
    parser.add_argument("--real_size", choices=sorted(REAL_SIZE), help="random weights of this real configuration")
    parser.add_argument("--layers", type=int, help="with --real_size: fewer transformer, text and vision layers and "
                                                   "a narrow VAE (a quick check that the path runs; its timings "
                                                   "mean nothing)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--samples", type=int, default=4, help="timed samples per measurement")
    parser.add_argument("--steps", type=int, default=2, help="num_inference_steps")
    parser.add_argument("--height", type=int, help="output height (default: the pipeline's, ~1 Mpx)")
    parser.add_argument("--width", type=int, help="output width")
    parser.add_argument("--image_side", type=int, default=256, help="side of the random source images")
    parser.add_argument("--kwargs", default='{"true_cfg_scale": 4.0, "negative_prompt": " "}',
                        help="more pipeline-call arguments, JSON")
    parser.add_argument("--options", default="attention_backend=native,cache=FirstBlockCache,cache=TaylorSeerCache",
                        help="speed options to time, comma-separated key=value (cache=<type> with its defaults; "
                             "compile=regional|full last: it cannot be undone)")
    parser.add_argument("--judge_model", default="tiny:qwen3-vl", help="the judge loaded for the switch")
    parser.add_argument("--output", type=Path)
    return parser.parse_args(argv)


def call_kwargs(args) -> dict:
    kwargs = {"num_inference_steps": args.steps, **json.loads(args.kwargs)}
    if args.height:
        kwargs["height"] = args.height
    if args.width:
        kwargs["width"] = args.width
    return kwargs


def build_editor(args) -> DiffusersEditor:
    cfg = DiffusersConfig(editor_model=args.editor_model if not args.real_size else "tiny:qwen-image-edit",
                          editor_dtype=args.dtype, editor_kwargs=call_kwargs(args))
    if not args.real_size:
        return DiffusersEditor(cfg, device=torch.device(args.device))
    from diffusers import AutoencoderKLQwenImage, DiffusionPipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    spec = REAL_SIZE[args.real_size]
    tiny = DiffusionPipeline.from_pretrained(resolve_model("tiny:qwen-image-edit"))
    ids = tiny.tokenizer.convert_tokens_to_ids
    transformer, text, vision, vae = (dict(spec[k]) for k in ("transformer", "text", "vision", "vae"))
    if args.layers:  # a wiring check: fewer layers everywhere, and a narrow VAE (it encodes every source at ~1 Mpx)
        transformer["num_layers"] = text["num_hidden_layers"] = vision["depth"] = args.layers
        vision["fullatt_block_indexes"] = [args.layers - 1]
        vae["base_dim"] = 8
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(args.dtype))
    try:
        with torch.device(args.device):  # random weights straight on the device: nothing downloaded or copied
            parts = {"transformer": QwenImageTransformer2DModel(**transformer),
                     "vae": AutoencoderKLQwenImage(**vae),
                     "text_encoder": Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
                         text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                         video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                         vision_end_token_id=ids("<|vision_end|>")))}
    finally:
        torch.set_default_dtype(previous)
    tiny.processor.image_processor = Qwen2VLImageProcessor()  # the real processor's defaults
    pipe = type(tiny)(scheduler=tiny.scheduler, tokenizer=tiny.tokenizer, processor=tiny.processor, **parts)
    return DiffusersEditor.from_pipe(cfg, pipe, device=torch.device(args.device))


def make_samples(n: int, side: int, folder: Path) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = folder / f"source_{i}.png"
        save_png(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), path)
        samples.append(Sample(index=i, id=f"bench_{i}", category="physics", source_image=ImageRef(path=path),
                              instruction="Show this ice cube after an hour in the midday sun."))
    return samples


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def direct(editor: DiffusersEditor, samples: list[Sample], device: str) -> tuple[float, list[np.ndarray]]:
    """Seconds per image and the edits, the pipeline called as a user would (after one warm-up call)."""
    def call(sample):
        generator = torch.Generator(device="cpu").manual_seed(sample_seed(0, sample.id))
        with torch.inference_mode():
            out = editor.pipe(image=sample.source_image.load(), prompt=sample.instruction, generator=generator,
                              **editor.kwargs).images
        return np.asarray(editor.pipe.numpy_to_pil(out[:1])[0]) if isinstance(out, np.ndarray) else np.asarray(out[0])

    call(samples[0])
    sync(device)
    start = time.perf_counter()
    images = [call(s) for s in samples]
    sync(device)
    return (time.perf_counter() - start) / len(samples), images


def harness(editor: DiffusersEditor, samples: list[Sample], dist: Distributed, folder: Path) -> dict:
    """The same pipeline through the harness's edit stage (this rank's share; batches of one sample)."""
    stage = EditStage(dist, seed_of=lambda i: sample_seed(0, i), batch_size=1, trust_remote_code=False,
                      logger=SimpleNamespace(info=lambda *a, **k: None))
    stage.editor = editor  # already loaded with these settings: the stage only edits
    folder.mkdir(parents=True, exist_ok=True)
    (records,) = stage.run([EditJob(RunFolder(folder), 1, DiffusersEditor, editor.cfg, samples)], close=False)
    t = stage.timings
    edits = {r["id"]: np.asarray(Image.open(folder / r["edited_image"]).convert("RGB")) for r in records
             if r["status"] == "ok"}
    return {"edited": t.edited, "s_per_image": (t.edit - t.barrier_wait) / max(t.edited, 1),
            "barrier_wait_s": t.barrier_wait, "ok": len(edits), "edits": edits}


def main(argv=None) -> int:
    args = parse_args(argv)
    dist = Distributed(timeout_s=1800)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    summary = {"device": device_name, "dtype": args.dtype, "world_size": dist.world_size, "call": call_kwargs(args),
               "samples": args.samples, "image_side": args.image_side, "judge_model": args.judge_model,
               "torch": torch.__version__,
               "command": "python scripts/bench_edit.py " + " ".join(sys.argv[1:] if argv is None else argv)}

    def measured(**values) -> None:
        """Keep a measurement: printed and written to --output at once, so a later crash loses nothing."""
        summary.update(values)
        if dist.is_main and args.output:
            write_json(args.output, summary)

    def row(name: str, seconds: float, ratio: float, difference) -> None:
        if dist.is_main:
            print(f"| {name} | {seconds:.4g} | {ratio:.3f} | {difference} |", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        samples = make_samples(args.samples, args.image_side, Path(scratch))
        started = time.perf_counter()
        editor = build_editor(args)
        sync(args.device)
        name = f"{args.real_size} (random weights)" if args.real_size else args.editor_model
        params = sum(p.numel() for p in editor.pipe.transformer.parameters())
        measured(editor=name, transformer_parameters=params, load_s=time.perf_counter() - started)
        if dist.is_main:
            print(f"editor: {name} (transformer {params / 1e9:.3g}B parameters), {device_name}, {args.dtype}, "
                  f"{args.samples} samples of {args.image_side}², call {call_kwargs(args)}, {dist.world_size} "
                  f"process(es); editor load {summary['load_s']:.1f} s")
            print("| measurement | s/image | time vs direct | max pixel difference from direct |")
            print("|---|---:|---:|---:|", flush=True)
        plain_s, plain = direct(editor, samples, args.device)
        measured(direct_s_per_image=plain_s)
        row("direct pipeline call", plain_s, 1.0, 0)
        harness(editor, samples[:1], dist, Path(scratch) / "warm")  # the first PNG write, the first record file
        through = harness(editor, samples, dist, Path(scratch) / "run")
        mine = {s.id: image for s, image in zip(samples, plain)}
        through["max_pixel_difference"] = max((int(np.abs(edit.astype(int) - mine[i].astype(int)).max())
                                               for i, edit in through.pop("edits").items()), default=None)
        waits = dist.all_gather([round(through["barrier_wait_s"], 3)])  # every rank's
        measured(harness=through, barrier_wait_s_per_rank=waits, overhead_ratio=through["s_per_image"] / plain_s,
                 options=[])
        row("through the harness (overhead)", through["s_per_image"], summary["overhead_ratio"],
            through["max_pixel_difference"])
        for option in [o for o in args.options.split(",") if o]:
            key, _, value = option.partition("=")
            cfg = DiffusersConfig(**{**editor.cfg.__dict__, key: {"type": value} if key == "cache" else value})
            apply_speed_options(editor.pipe, cfg)
            seconds, images = direct(editor, samples, args.device)
            result = {"option": option, "s_per_image": seconds, "speedup": plain_s / seconds,
                      "max_pixel_difference": max(int(np.abs(a.astype(int) - b.astype(int)).max())
                                                  for a, b in zip(images, plain))}
            measured(options=[*summary["options"], result])
            row(option, seconds, 1 / result["speedup"], result["max_pixel_difference"])
            if key == "cache":
                editor.pipe.transformer.disable_cache()
            elif key == "attention_backend":
                editor.pipe.transformer.set_attention_backend("native")
        started = time.perf_counter()
        editor.close()
        common = JudgeConfig()
        judge = QwenVLJudge(QwenVLConfig(judge_model=args.judge_model, judge_dtype=args.dtype), judge=common,
                            device=torch.device(args.device))
        sync(args.device)
        measured(switch_s=time.perf_counter() - started)
        judge.close()
    if dist.is_main:
        print(f"barrier wait per rank (s): {waits}; model switch (free the editor, load {args.judge_model}): "
              f"{summary['switch_s']:.2f} s")
    dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
