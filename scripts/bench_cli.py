"""How fast the command line answers: `--help`, a config error and dataset errors, each run as a fresh process
(the median of --repeat runs, wall seconds, exit code). Run from the checkout:

    python scripts/bench_cli.py --repeat 5

Goal (issue 13): `--help` and a config error under 2 s, a bad dataset path under 5 s, on a 2-core machine.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the median is printed")
    parser.add_argument("--entry", default="run_benchmark.py", help="the script to time (default run_benchmark.py)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run it in (default this one), "
                                                               "e.g. another commit's worktree for a before/after")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "--help": ["--help"],
            "config error (--limit abc)": ["--limit", "abc"],
            "unknown flag (--ouput_dir)": ["--ouput_dir", "x"],
            "missing local dataset (data/nope)": ["--dataset", "data/nope"],
            "hub dataset, offline, not cached": ["--dataset", "someorg/somebench", "--output_dir", f"{tmp}/o"],
        }
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": f"{tmp}/hf", "PATH": "/usr/bin:/bin"}
        print("| case | median s | exit code |\n|---|---:|---:|")
        for name, argv in cases.items():
            times, codes = [], set()
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = subprocess.run([sys.executable, args.entry, *argv], cwd=args.root, capture_output=True,
                                        env=env)
                times.append(time.perf_counter() - t0)
                codes.add(result.returncode)
            print(f"| {name} | {statistics.median(times):.2f} | {','.join(map(str, sorted(codes)))} |")


if __name__ == "__main__":
    main()
