"""How fast the command line answers: `--help`, a config error and dataset errors, each run as a fresh process
(the median of --repeat runs, wall seconds, exit code). Run from the checkout:

    python scripts/bench_cli.py --repeat 5

Goal (issue 13): `--help` and a config error under 2 s, a bad dataset path under 5 s, on a 2-core machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the median is printed")
    parser.add_argument("--entry", default="run_benchmark.py", help="the script to time (default run_benchmark.py)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run it in (default this one), "
                                                               "e.g. another commit's worktree for a before/after")
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON, each case as soon as it is timed")
    args = parser.parse_args(argv)
    summary = {"command": "python scripts/bench_cli.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "python": sys.executable, "root": str(args.root), "entry": args.entry, "repeat": args.repeat,
               "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "--help": ["--help"],
            "config error (--limit abc)": ["--limit", "abc"],
            "unknown flag (--ouput_dir)": ["--ouput_dir", "x"],
            "missing local dataset (data/nope)": ["--dataset", "data/nope"],
            "hub dataset, offline, not cached": ["--dataset", "someorg/somebench", "--output_dir", f"{tmp}/o"],
        }
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": f"{tmp}/hf", "PATH": "/usr/bin:/bin"}
        print("| case | median s | exit code |\n|---|---:|---:|", flush=True)
        for name, argv_case in cases.items():
            times, codes = [], set()
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = subprocess.run([sys.executable, args.entry, *argv_case], cwd=args.root, capture_output=True,
                                        env=env)
                times.append(time.perf_counter() - t0)
                codes.add(result.returncode)
            case = {"case": name, "median_s": statistics.median(times), "exit_codes": sorted(codes)}
            summary["cases"].append(case)
            if args.output:  # each case as soon as it is timed: a later crash loses nothing measured
                partial = args.output.with_name(args.output.name + ".partial")
                partial.write_text(json.dumps(summary, indent=2) + "\n")
                os.replace(partial, args.output)
            print(f"| {name} | {case['median_s']:.2f} | {','.join(map(str, case['exit_codes']))} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
