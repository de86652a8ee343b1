"""Compare two runs of the benchmark on the same data: is B better than A, per category and overall?

    python scripts/compare_runs.py RUN_A RUN_B [--metric NAME] [--json FILE] [--resamples 10000] [--seed 0]

Only sample ids that both runs scored are compared, as pairs: per category and overall, the two means, the
difference B - A with a 95% paired-bootstrap interval and the two-sided p-value of a paired permutation test
(exact for few pairs, else Monte Carlo). Runs on other data, rubrics, protocol, scoring version, score
formula or failure policy are refused (exit code 2); another judge is allowed and printed as a warning. See
bench_lib/compare.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib.compare import Refusal, compare, load_run, render  # noqa: E402
from bench_lib.scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path, help="the first run's output folder (A, the reference)")
    parser.add_argument("run_b", type=Path, help="the second run's output folder (B)")
    parser.add_argument("--metric", help="the metric to compare: any of the runs' protocol's (report.json "
                                         "`protocol.metrics`), default `score` (the protocol's primary metric)")
    parser.add_argument("--json", type=Path, help="also write the numbers here, as JSON")
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP_RESAMPLES,
                        help=f"bootstrap resamples, and sign flips of the Monte Carlo permutation test "
                             f"(default {BOOTSTRAP_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED,
                        help=f"random seed of the bootstrap and the sign flips (default {BOOTSTRAP_SEED}): the same "
                             "runs always give the same table")
    args = parser.parse_args(argv)
    try:
        if args.json:
            check_output_file(args.json)
        result = compare(load_run(args.run_a), load_run(args.run_b), metric=args.metric,
                         resamples=args.resamples, seed=args.seed)
    except Refusal as err:
        print(f"compare_runs: {err}", file=sys.stderr)
        return 2
    if args.json:
        try:
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            print(f"compare_runs: can't write --json {args.json}: {err.strerror or err}", file=sys.stderr)
            return 2
    print(render(result), end="")
    return 0


def check_output_file(path: Path) -> None:
    """Before any work: `--json` must name a file in a folder that exists (a typo is not created)."""
    if path.is_dir():
        raise Refusal(f"--json {path} is a folder: give a file name")
    if not path.parent.is_dir():
        raise Refusal(f"--json {path}: the folder {path.parent} does not exist")


if __name__ == "__main__":
    sys.exit(main())
