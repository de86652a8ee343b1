"""A checkpoint sweep in one job against the same variants as separate runs: wall time of each, and what the sweep
saves (editor and judge loads) and spends (adapter swaps). Tiny models on CPU by default; every run is a fresh
process started the same way, on the same samples, into a fresh output folder.

    python scripts/bench_sweep.py --limit 4                  # base + 2 tiny adapters, one process each
    python scripts/bench_sweep.py --limit 4 --launch "accelerate launch --config_file accelerate_configs/cpu.yaml"
    python scripts/bench_sweep.py --limit 50 --config configs/qwen_image_edit.yaml --dataset ORG/BENCH \
        --adapters_dir /shared/train/my-lora/checkpoints     # GPU: real weights and adapters

Prints a Markdown table (docs/PERFORMANCE.md has the figures and the command that made them); `--output FILE`
also writes the numbers as JSON, each as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(command: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {shlex.join(command)}\n{result.stderr[-4000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--limit", type=int, default=4, help="samples per variant (default 4)")
    parser.add_argument("--adapters", type=int, default=2, help="tiny adapters besides the base (default 2)")
    parser.add_argument("--launch", default=f"{sys.executable}",
                        help="how each run is started (default: this Python, one process)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "smoke.yaml"), help="the recipe (default smoke)")
    parser.add_argument("--adapters_dir", type=Path, default=None,
                        help="a folder of real adapters for the recipe's editor (one subfolder each) instead of "
                             "tiny ones; the runs then use the machine's GPU")
    parser.add_argument("--dataset", default=None, help="the dataset, where the recipe has none")
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON, each as soon as it is measured")
    args = parser.parse_args(argv)
    from bench_lib.demo.tiny import build_lora
    from bench_lib.models import is_tiny
    from bench_lib.options import parse_config
    from bench_lib.store import write_json
    from bench_lib.sweep import natural_key

    summary = {"command": "python scripts/bench_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "limit": args.limit, "sweep_s": None, "single_s": {}}

    def measured(**values) -> None:
        summary.update(values)
        if args.output:  # at once: a later crash loses nothing measured
            write_json(args.output, summary)

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if args.adapters_dir is None:
        env["ACCELERATE_USE_CPU"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        if args.adapters_dir is not None:
            adapters = args.adapters_dir.resolve()
            names = sorted((p.name for p in adapters.iterdir() if p.is_dir()), key=natural_key)
        else:
            adapters = Path(tmp) / "adapters"
            names = [f"step-{100 * (i + 1)}" for i in range(args.adapters)]
            editor_model = parse_config(["--config", args.config]).editor_backend.editor_model
            base_model = editor_model.removeprefix("tiny:") if is_tiny(editor_model) else "qwen-image-edit"
            for i, name in enumerate(names):
                build_lora(adapters / name, seed=i + 1, base=base_model)  # for the recipe's tiny editor
        measured(variants=["base", *names])
        base = [*shlex.split(args.launch), str(ROOT / "run_benchmark.py"), "--config", args.config,
                "--limit", str(args.limit), *(["--dataset", args.dataset] if args.dataset else [])]
        sweep_s = timed([*base, "--sweep", str(adapters), "--output_dir", f"{tmp}/sweep"], env)
        t = json.loads((Path(tmp) / "sweep" / "sweep.json").read_text())["timings"]
        measured(sweep_s=sweep_s, adapter_swap_s={v["name"]: v["adapter_swap_s"] for v in t["variants"][1:]},
                 edit_s_per_image={v["name"]: v["edit_s_per_image"] for v in t["variants"]},
                 sweep_editor_loads_per_rank=[r["editor_loads"] for r in t["per_rank"]],
                 sweep_judge_loads_per_rank=[r["judge_loads"] for r in t["per_rank"]])
        print(f"| runs | wall (s) |\n|---|---:|\n| one sweep of {1 + len(names)} variants | {sweep_s:.1f} |",
              flush=True)
        single_timings = []
        for name in ["base", *names]:
            lora = [] if name == "base" else ["--lora", str(adapters / name)]
            seconds = timed([*base, *lora, "--output_dir", f"{tmp}/single-{name}"], env)
            single_timings.append(json.loads((Path(tmp) / f"single-{name}" / "report.json").read_text())["timings"])
            measured(single_s={**summary["single_s"], name: seconds})
    singles = summary["single_s"]
    each = ", ".join(f"{v:.1f}" for v in singles.values())
    print(f"| {1 + len(names)} single runs | {sum(singles.values()):.1f} ({each}) |")
    saved_loads = sum(s["load_editor_s"] for s in single_timings[1:])
    saved_switches = sum(s["switch_s"] for s in single_timings[1:])
    measured(saved_editor_loads_s=saved_loads, saved_switches_s=saved_switches)
    print(f"\nSaved by the sweep (the single runs' own figures): {len(names)} editor loads {saved_loads:.2f} s, "
          f"{len(names)} model switches (free editor + load judge) {saved_switches:.2f} s, and {len(names)} process "
          f"starts. Spent: adapter swaps "
          + ", ".join(f"{name} {s:.3f} s" for name, s in summary["adapter_swap_s"].items())
          + "; per variant edit s/image " + ", ".join(f"{n} {s}" for n, s in summary["edit_s_per_image"].items())
          + f"; editor loads per rank {summary['sweep_editor_loads_per_rank']}, "
            f"judge loads {summary['sweep_judge_loads_per_rank']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
