"""Entry point for multi-process tests: runs the benchmark like run_benchmark.py, then checks, inside
each launched worker, that the process group really had the size the test asked for.

Fault injection for the tests, by environment variable (rank = global rank):
  BENCH_TEST_KILL=edit:<rank>:<n>    SIGKILL that rank right after its n-th edit is saved (record not yet written)
  BENCH_TEST_KILL=judge:<rank>:<n>   SIGKILL it right after its n-th judge batch is scored (records not written)
  BENCH_TEST_FAIL_LOAD=<rank>        that rank's editor fails to load
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib import parse_config, run  # noqa: E402


def inject_faults() -> None:
    import signal

    import bench_lib.runner as runner

    rank = int(os.environ.get("RANK", "0"))
    if os.environ.get("BENCH_TEST_FAIL_LOAD") == str(rank):
        def failing_load(*args, **kwargs):
            raise RuntimeError("injected load failure")

        runner.load_editor = failing_load
    kill = os.environ.get("BENCH_TEST_KILL")
    if kill:
        stage, kill_rank, after = kill.split(":")
        if int(kill_rank) == rank:
            name = {"edit": "edit_sample", "judge": "judge_batch"}[stage]
            real, calls = getattr(runner, name), []

            def killing(*args, **kwargs):
                result = real(*args, **kwargs)
                calls.append(1)
                if len(calls) == int(after):
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            setattr(runner, name, killing)


def main() -> None:
    inject_faults()
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
