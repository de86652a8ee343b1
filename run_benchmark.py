"""Benchmark an instruction-based image editor with a VLM judge.

Offline smoke run (tiny models, bundled demo data, no GPU, no network):

    python run_benchmark.py

Real run on six GPUs:

    accelerate launch --config_file accelerate_configs/6gpu.yaml run_benchmark.py \
        --config configs/qwen_image_edit.yaml --dataset <hub id | folder | file> --output_dir runs/ckpt-1

The same command line as `python -m bench_lib` and the `edit-bench` console script (`pip install -e .`); this
file is what `accelerate launch` runs. Exit code: 0 the run finished and scored at least one sample (per-sample
failures included), 2 a bad config, dataset or model name (found before any model loads), 1 otherwise (a run
stopped early because its first 8 samples failed with the same error, or one that scored nothing: one line).
"""

import sys

from bench_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
