"""Write a finished run as a Hugging Face dataset (images beside their scores); see bench_lib/export.py.

    python scripts/export_results.py outputs/smoke exported/smoke
    python scripts/export_results.py outputs/smoke exported/smoke --push_to_hub my-org/smoke-results --private

Then: `datasets.load_from_disk("exported/smoke")`. Exit code 2 for a folder that is not one finished run, data
that is not the run's (`--dataset`), or an output folder that is a file or not empty.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib.config import ConfigError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="A finished run's output_dir.")
    parser.add_argument("out_dir", type=Path, help="A new (or empty) folder for the dataset (save_to_disk).")
    parser.add_argument("--dataset", help="Where the run's dataset is now, when it has moved since the run.")
    parser.add_argument("--push_to_hub", "--push-to-hub", metavar="REPO",
                        help="Also upload the dataset and its card to this hub dataset repository.")
    parser.add_argument("--private", action="store_true", help="With --push_to_hub: create the repository private.")
    args = parser.parse_args(argv)
    try:
        from bench_lib.export import export_run, push

        exported = export_run(args.run_dir, args.out_dir, dataset=args.dataset)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(exported)} rows to {args.out_dir} (datasets.load_from_disk({str(args.out_dir)!r}))")
    if args.push_to_hub:
        push(exported, args.out_dir, args.push_to_hub, private=args.private)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
