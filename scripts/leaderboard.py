"""One table of many finished runs, and their edits side by side.

    python scripts/leaderboard.py outputs/run-a outputs/sweep outputs/run-b --out outputs/leaderboard [--gallery]

Writes OUT/leaderboard.md, .csv, .html (and .json): every run's headline metrics with their 95% CIs, editor,
adapter, training step, judge, protocol, judge prompts' hash and date, best first. A sweep folder stands for its
variants. The FIRST run given is the reference: a run whose protocol, judge, judge prompts, scoring, failure
policy, dataset or sample set differs from it is left out, and named with the field that differs. `--gallery` also
writes OUT/side_by_side.html: per sample, the source, each run's edit and scores, and the sanity baselines' scores.
Reads only the runs' written outputs; judges nothing again. Exit code 2 when a folder is not a finished run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or sweep folders; the first is the reference")
    parser.add_argument("--out", type=Path, required=True, help="folder for the leaderboard's files (created)")
    parser.add_argument("--gallery", action="store_true", help="also write side_by_side.html")
    parser.add_argument("--gallery_limit", type=int, default=None, help="samples on the side-by-side page (all)")
    args = parser.parse_args(argv)
    from bench_lib.config import ConfigError
    from bench_lib.leaderboard import (
        check_side_by_side,
        leaderboard,
        render_markdown,
        write_leaderboard,
        write_side_by_side,
    )

    try:
        board = leaderboard(args.runs)
        if args.gallery_limit is not None and args.gallery_limit < 0:
            raise ConfigError(f"`--gallery_limit` must be >= 0, got {args.gallery_limit}")
        if args.gallery:  # before anything is written
            check_side_by_side(board, limit=args.gallery_limit)
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"`--out` {args.out} is a file: give a folder for the leaderboard's files")
        write_leaderboard(board, args.out)
        if args.gallery:
            write_side_by_side(board, args.out, limit=args.gallery_limit)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_markdown(board), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
