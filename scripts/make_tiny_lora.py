"""Write a LoRA adapter for a tiny editor, to try LoRA runs and checkpoint sweeps offline.

    python scripts/make_tiny_lora.py OUT --seed N [--strength 30] [--base qwen-image-edit] [--rank 4]

OUT/pytorch_lora_weights.safetensors is in diffusers' LoRA format (the transformer's attention projections,
random weights drawn from the seed), so `--lora OUT` loads it into `tiny:<base>` with `load_lora_weights`
exactly as a real adapter loads into the real model. Different seeds give different adapters. At the default
strength 1 a random adapter barely moves an edit's pixels; `--strength 30` scales its effect so that the edits
change visibly (more than one level of 255 on average: tests/test_training_sweep.py); `--strength 1e30` stands for
a checkpoint whose training diverged: the adapter overflows float32, so every edit is non-finite (flagged
`non_finite` and saved black).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from bench_lib.models import TINY_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the adapter's folder (created)")
    parser.add_argument("--seed", type=int, required=True, help="random seed of the adapter's weights")
    parser.add_argument("--base", default="qwen-image-edit", choices=[m for m in TINY_MODELS if m not in
                                                                      ("qwen3-vl", "qwen3-vl-moe", "qwen2.5-vl")],
                        help="the tiny editor it is for (default: qwen-image-edit)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default: 4)")
    parser.add_argument("--strength", type=float, default=1.0,
                        help="scale of the adapter's effect (its B matrices; default 1: a barely visible change; 30: a "
                             "visible one; 1e30: a diverged checkpoint, every edit non-finite)")
    args = parser.parse_args(argv)
    if not math.isfinite(args.strength):
        parser.error(f"--strength must be a finite number, got {args.strength}")
    from bench_lib.demo.tiny import build_lora

    print(build_lora(args.out, seed=args.seed, base=args.base, rank=args.rank, strength=args.strength))
    return 0


if __name__ == "__main__":
    sys.exit(main())
