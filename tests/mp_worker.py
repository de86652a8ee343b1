"""Entry point for multi-process tests: runs the benchmark like run_benchmark.py, then checks, inside
each launched worker, that the process group really had the size the test asked for."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib import parse_config, run  # noqa: E402


def main() -> None:
    expected = int(os.environ["BENCH_EXPECT_WORLD_SIZE"])
    cfg = parse_config(sys.argv[1:])
    run(cfg)
    from accelerate import PartialState

    state = PartialState()
    assert state.num_processes == expected, f"world size {state.num_processes}, expected {expected}"
    marker = Path(cfg.run.output_dir) / f"worker-{state.process_index}.json"
    marker.write_text(json.dumps({"rank": state.process_index, "world_size": state.num_processes}))


if __name__ == "__main__":
    main()
