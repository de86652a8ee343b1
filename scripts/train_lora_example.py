"""An example training loop that evaluates its editor with this harness every K steps (`bench_lib.evaluate`).

    python scripts/train_lora_example.py --output_dir runs/lora-example
    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 --main_process_port 0 \
        scripts/train_lora_example.py --output_dir runs/lora-example        # two CPU processes

It trains a LoRA on the transformer of the tiny editor (`tiny:qwen-image-edit`, built offline) with a MADE-UP
loss: the transformer's output on random latents is regressed onto random targets. It is an example of the loop
around the evaluation, not of how to train an editor. Every `--eval_every` steps it

- saves the adapter in diffusers' layout: `<output_dir>/checkpoint-<step>/pytorch_lora_weights.safetensors`
  (what `run_benchmark.py --lora <that folder>` and `--sweep <output_dir>` read);
- evaluates the pipeline in memory, adapter active: `bench_lib.evaluate(recipe, pipeline=pipe,
  accelerator=accelerator, keep_judge=True, step=step, output_dir=<output_dir>/eval/checkpoint-<step>)`. The
  judge loads at the first evaluation and stays loaded; the scores go into `<output_dir>/eval/checkpoint-<step>/`
  and, at that step, into the script's own trackers (`--log_with`, default tensorboard under
  `<output_dir>/logs`) beside the training loss.

Each process writes `<output_dir>/summary-rank<r>.json` (world size, each evaluation's step, score and judge
loads). `--no_eval` trains exactly the same way without evaluating: the adapters come out identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_lib  # noqa: E402  (first: it sets MKL_CBWR before torch loads MKL, for CPU reproducibility)

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", type=Path, required=True, help="checkpoints, evaluations, logs")
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "smoke.yaml"),
                        help="the benchmark recipe each evaluation runs (default: the offline smoke recipe)")
    parser.add_argument("--eval_overrides", default="{}",
                        help='JSON of config keys over the recipe\'s, e.g. \'{"limit": 4}\'')
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (default 4)")
    parser.add_argument("--eval_every", type=int, default=2, help="save and evaluate every K steps (default 2)")
    parser.add_argument("--no_eval", action="store_true", help="save checkpoints, evaluate nothing")
    parser.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default 1e-2)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log_with", default="tensorboard", help="accelerate tracker(s), or none")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers import QwenImageEditPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from bench_lib.models import resolve_model

    log_with = None if args.log_with == "none" else args.log_with.split(",")
    accelerator = Accelerator(log_with=log_with, project_config=ProjectConfiguration(
        project_dir=str(args.output_dir), logging_dir=str(args.output_dir / "logs")))
    accelerator.init_trackers("train_lora_example", config={"lr": args.lr, "rank": args.rank, "steps": args.steps})
    set_seed(args.seed)

    with accelerator.main_process_first():  # builds the tiny editor once
        folder = resolve_model("tiny:qwen-image-edit")
    pipe = QwenImageEditPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.to(accelerator.device)
    transformer = pipe.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                       target_modules=TARGETS))
    transformer.train()
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=args.lr)
    model, optimizer = accelerator.prepare(transformer, optimizer)  # DDP on several processes

    config = transformer.config
    height = width = 4  # latent patches
    channels = config.in_channels
    evaluations = []
    for step in range(1, args.steps + 1):
        # The made-up loss: each process its own random batch (seeded by step and rank).
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 101 + accelerator.process_index)
        latents = torch.randn(2, height * width, channels, generator=g)
        text = torch.randn(2, 8, config.joint_attention_dim, generator=g)
        target = torch.randn(2, height * width, config.out_channels * config.patch_size ** 2, generator=g)
        timestep = torch.rand(2, generator=g)
        out = model(hidden_states=latents.to(accelerator.device), encoder_hidden_states=text.to(accelerator.device),
                    encoder_hidden_states_mask=torch.ones(2, 8, dtype=torch.long, device=accelerator.device),
                    timestep=timestep.to(accelerator.device), img_shapes=[[(1, height, width)]] * 2,
                    return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out, target.to(accelerator.device))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"train/loss": accelerator.reduce(loss.detach(), reduction="mean").item()}, step=step)

        if step % args.eval_every:
            continue
        checkpoint = args.output_dir / f"checkpoint-{step}"
        if accelerator.is_main_process:
            QwenImageEditPipeline.save_lora_weights(
                checkpoint, transformer_lora_layers=get_peft_model_state_dict(accelerator.unwrap_model(model)))
        accelerator.wait_for_everyone()
        if args.no_eval:
            continue
        result = bench_lib.evaluate(args.recipe, pipeline=pipe, accelerator=accelerator, keep_judge=True, step=step,
                                    output_dir=str(args.output_dir / "eval" / checkpoint.name),
                                    **json.loads(args.eval_overrides))
        evaluations.append({"step": step, "score": result.score.mean, "ci95": result.score.ci95,
                            "judge_loads": result.judge_loads, "output_dir": str(result.output_dir)})
        accelerator.print(f"step {step}: {result.primary} {result.score.mean:.3f} {result.score.ci95}")

    bench_lib.release_judge()
    summary = {"world_size": accelerator.num_processes, "rank": accelerator.process_index,
               "evaluations": evaluations, "judge_loads": sum(e["judge_loads"] for e in evaluations)}
    (args.output_dir / f"summary-rank{accelerator.process_index}.json").write_text(json.dumps(summary, indent=1))
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
