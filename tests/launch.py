"""Start real `accelerate launch` runs on CPU from tests (N processes talking gloo)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mp_worker.py"
# The recipe of the launched runs: the FLUX.1 Kontext smoke recipe (tiny models). What the launched tests check
# (sharding, seeds, barriers, resume, sweeps) does not depend on the pipeline, and a Kontext edit costs ~0.1 CPU-s
# here against ~6 CPU-s for tiny Qwen-Image-Edit, which VAE-encodes its condition image at ~1 Mpx whatever the
# output size (the README's offline command and the editor tests run that one).
TINY_ARGS = ["--config", str(ROOT / "configs" / "smoke_flux_kontext.yaml")]


def accelerate_launch(num_processes: int, args: list[str], *, timeout: float, script: Path = WORKER,
                      check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` with N real CPU processes (`--cpu --num_processes N` would start only one)."""
    # An explicit config file, so a developer's accelerate default_config.yaml can't change the launch.
    if num_processes == 1:
        launch = ["--config_file", str(ROOT / "accelerate_configs" / "1gpu.yaml"), "--cpu", "--num_processes", "1"]
    else:
        launch = ["--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"), "--num_processes",
                  str(num_processes), "--main_process_port", "0"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, str(script), *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "BENCH_EXPECT_WORLD_SIZE": str(num_processes), "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"launch failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result
