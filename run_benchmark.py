"""Benchmark an instruction-based image editor with a VLM judge.

Offline smoke run (tiny models, bundled demo data, no GPU, no network):

    python run_benchmark.py

Real run on six GPUs:

    accelerate launch --config_file accelerate_configs/6gpu.yaml run_benchmark.py \
        --config configs/qwen_image_edit.yaml --dataset <hub id or manifest> --output_dir runs/ckpt-1

Exit code: 0 the run finished (per-sample failures included), 2 bad config or dataset, 1 otherwise.
"""

import logging
import os
import sys

from bench_lib import ConfigError, parse_config, run


def main(argv: list[str]) -> int:
    # Launchers set RANK in every process: only global rank 0 logs progress; all ranks log warnings.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    try:
        cfg = parse_config(argv)
        if "--config" not in argv and not any(a.startswith("--config=") for a in argv):
            logging.getLogger("run_benchmark").info("no --config given: running the offline smoke recipe %s", cfg.recipe)
        run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
