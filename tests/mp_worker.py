"""Entry point for multi-process tests: runs the benchmark like run_benchmark.py, then checks, inside
each launched worker, that the process group really had the size the test asked for.

Fault injection for the tests, by environment variable (rank = global rank):
  BENCH_TEST_KILL=edit:<rank>:<n>    SIGKILL that rank right after its n-th edit is saved (record not yet written)
  BENCH_TEST_KILL=judge:<rank>:<n>   SIGKILL it right after its n-th judge batch is scored (records not written)
  BENCH_TEST_FAIL_LOAD=<rank>        that rank's editor fails to load
  BENCH_TEST_KILL_REPLACE=<rank>:<file name>  SIGKILL that rank just before it renames a file of that name into
                                     place (its temporary file is complete and still there)
  BENCH_TEST_SLOW_EDIT=<seconds>     every rank sleeps that long after each edit (a run that is still going)
  BENCH_TEST_COUNT_LOADS=1           count editor pipelines and judges loaded (written into the worker's marker)
  BENCH_TEST_REGISTER=<module>:<fn>  call that function of a test module first (it registers test backends
                                     through the real registry, as the test module itself does in process)

A run that ends with `RunFailed` (stopped early, or nothing scored) exits with code 1 as the command line does,
after the same world-size checks, with the message in the worker's marker.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib import ConfigError, parse_config, run  # noqa: E402
from bench_lib.failures import RunFailed  # noqa: E402

LOADS = {"pipelines": 0, "judges": 0}


def count_loads() -> None:
    """Count every diffusers pipeline loaded from disk and every judge the judge stage loads."""
    import diffusers

    import bench_lib.judge_stage as judge_stage

    real_pipeline = diffusers.DiffusionPipeline.from_pretrained.__func__
    real_judge = judge_stage.load_judge

    def pipeline(cls, *args, **kwargs):
        LOADS["pipelines"] += 1
        return real_pipeline(cls, *args, **kwargs)

    def judge(*args, **kwargs):
        LOADS["judges"] += 1
        return real_judge(*args, **kwargs)

    diffusers.DiffusionPipeline.from_pretrained = classmethod(pipeline)
    judge_stage.load_judge = judge


def inject_faults() -> None:
    import signal

    import bench_lib.edit_stage as edit_stage
    import bench_lib.judge_stage as judge_stage

    rank = int(os.environ.get("RANK", "0"))
    if os.environ.get("BENCH_TEST_COUNT_LOADS"):
        count_loads()
    if os.environ.get("BENCH_TEST_FAIL_LOAD") == str(rank):
        def failing_load(*args, **kwargs):
            raise RuntimeError("injected load failure")

        edit_stage.load_editor = failing_load
    replace = os.environ.get("BENCH_TEST_KILL_REPLACE")
    if replace and replace.split(":", 1)[0] == str(rank):
        target, real_replace = replace.split(":", 1)[1], os.replace

        def killing_replace(src, dst, **kwargs):
            if Path(dst).name == target:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, **kwargs)

        os.replace = killing_replace  # this worker process only
    slow = os.environ.get("BENCH_TEST_SLOW_EDIT")
    if slow:
        import time

        real_edit = edit_stage.edit_sample

        def slow_edit(*args, **kwargs):
            result = real_edit(*args, **kwargs)
            time.sleep(float(slow))
            return result

        edit_stage.edit_sample = slow_edit
    kill = os.environ.get("BENCH_TEST_KILL")
    if kill:
        stage, kill_rank, after = kill.split(":")
        if int(kill_rank) == rank:
            module, name = {"edit": (edit_stage, "edit_sample"), "judge": (judge_stage, "judge_batch")}[stage]
            real, calls = getattr(module, name), []

            def killing(*args, **kwargs):
                result = real(*args, **kwargs)
                calls.append(1)
                if len(calls) == int(after):
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            setattr(module, name, killing)


def register_test_backends() -> None:
    spec = os.environ.get("BENCH_TEST_REGISTER")
    if spec:
        import importlib

        module, _, function = spec.partition(":")
        getattr(importlib.import_module(module), function)()


def main() -> None:
    register_test_backends()
    inject_faults()
    expected = int(os.environ["BENCH_EXPECT_WORLD_SIZE"])
    failed = None
    try:
        cfg = parse_config(sys.argv[1:])
        run(cfg)
    except ConfigError as err:  # as run_benchmark.py does: one line, exit code 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as err:  # as run_benchmark.py does: one line (logged by the main process), exit code 1
        if not err.reported:
            print(f"error: {err}", file=sys.stderr)
        failed = str(err)
    from accelerate import PartialState

    state = PartialState()
    assert state.num_processes == expected, f"world size {state.num_processes}, expected {expected}"
    # The process group is really gone: a gloo thread left running can abort the process while it exits.
    threads = [(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]
    assert not [t for t in threads if "gloo" in t], f"process group threads still running after the run: {threads}"
    marker = Path(cfg.run.output_dir) / f"worker-{state.process_index}.json"
    marker.write_text(json.dumps({"rank": state.process_index, "world_size": state.num_processes, "loads": LOADS,
                                  "failed": failed}))
    if failed is not None:
        sys.exit(1)


if __name__ == "__main__":
    main()
