"""bench_lib.distributed: what each rank is told about its devices (multi-process runs: test_multiprocess.py)."""

from types import SimpleNamespace

import torch

from bench_lib.distributed import Distributed


def distributed_with(state) -> Distributed:
    """A Distributed around a given accelerate state (the device facts a GPU launch would give)."""
    dist = Distributed.__new__(Distributed)
    dist.state = state
    return dist


def test_the_judge_goes_on_the_editor_s_device():
    """accelerate's device and the local process index differ when a launch maps processes to GPUs in another
    order (CUDA_VISIBLE_DEVICES per process, gpu_ids): the judge must land where the editor ran."""
    dist = distributed_with(SimpleNamespace(device=torch.device("cuda", 3), local_process_index=1))
    assert dist.judge_device_map() == {"": 3}
    plain = distributed_with(SimpleNamespace(device=torch.device("cuda", 0), local_process_index=0))
    assert plain.judge_device_map() == {"": 0}
    assert distributed_with(SimpleNamespace(device=torch.device("cpu"), local_process_index=0)).judge_device_map() \
        is None


def test_weights_download_once_per_node_before_the_edit_stage(tmp_path):
    """Two machines of two processes each (on this host): each node's local main process fetches every model once
    (the editor once for two variants of one base, the judge once), the node's other process waits for it; the
    hub calls are replaced inside the workers by ones that record who called them."""
    import json
    import os
    import subprocess
    import sys

    from launch import ROOT
    from test_slurm import free_port

    from bench_lib.models import resolve_model

    for name in ("tiny:qwen-image-edit", "tiny:qwen3-vl"):
        resolve_model(name)  # built once here, not by four workers at a time
    port = free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "BENCH_EXPECT_WORLD_SIZE": "4",
           "PYTHONUNBUFFERED": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    machines = []
    for machine in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / "multinode.yaml"), "--multi_gpu", "--num_machines", "2",
               "--machine_rank", str(machine), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--num_processes", "4", "--rdzv_backend", "static", "--same_network",
               str(ROOT / "tests" / "download_worker.py"), str(tmp_path)]
        machines.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True))
    logs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(log[-4000:] for log in logs)
    workers = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("worker-*.json"))]
    assert [(w["rank"], w["world_size"]) for w in workers] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    calls = [json.loads(line) for p in tmp_path.glob("calls-*.jsonl") for line in p.read_text().splitlines()]
    local_mains = {w["rank"] for w in workers if w["local_main"]}
    assert len(local_mains) == 2 and {c["rank"] for c in calls} == local_mains
    for node in (0, 1):
        assert sorted((c["call"], c["name"], c["revision"]) for c in calls if c["node"] == node) == [
            ("DiffusionPipeline.download", "org/editor", "v2"), ("snapshot_download", "org/judge", None)]


def test_an_error_of_the_main_process_in_on_main_reaches_every_rank_at_once():
    """Only a ConfigError was passed on: any other error on the main process (an OSError listing a checkpoint folder
    on a network file system) left the other ranks at the gather until the process-group timeout."""
    from types import SimpleNamespace

    import pytest

    from bench_lib.distributed import Distributed
    from bench_lib.failures import RunFailed

    def on_rank(main: bool, gathered=None):
        dist = object.__new__(Distributed)
        dist.state = SimpleNamespace(is_main_process=main, num_processes=2, process_index=0 if main else 1)
        sent = []
        dist.all_gather = lambda items: sent.extend(items) or (gathered if gathered is not None else list(items))
        return dist, sent

    def listing():
        raise PermissionError("[Errno 13] Permission denied: 'ckpts'")

    main, sent = on_rank(True)
    with pytest.raises(PermissionError):
        main.on_main(listing)
    other, _ = on_rank(False, gathered=sent)
    with pytest.raises(RunFailed, match="the main process failed: PermissionError: .*Permission denied"):
        other.on_main(listing)
    assert on_rank(True)[0].on_main(lambda: [1, 2]) == [1, 2]


def test_a_ctrl_c_on_the_main_process_reaches_every_rank_at_once():
    """A KeyboardInterrupt (a BaseException) on the main process inside `on_main` or `on_local_main` (listing the
    checkpoints, locking, planning, downloading) left the other ranks at the gather until the process-group
    timeout: the main process now tells them before it raises it."""
    import pytest

    from bench_lib.failures import RunFailed

    def on_rank(main: bool, gathered=None):
        dist = object.__new__(Distributed)
        dist.state = SimpleNamespace(is_main_process=main, is_local_main_process=main, num_processes=2,
                                     process_index=0 if main else 1)
        sent = []
        dist.all_gather = lambda items: sent.extend(items) or (gathered + items if gathered is not None
                                                              else list(items))
        return dist, sent

    def interrupted():
        raise KeyboardInterrupt

    main, sent = on_rank(True)
    with pytest.raises(KeyboardInterrupt):
        main.on_main(interrupted)
    other, _ = on_rank(False, gathered=sent)
    with pytest.raises(RunFailed, match=r"^the main process failed: KeyboardInterrupt$"):
        other.on_main(interrupted)

    main, sent = on_rank(True)
    with pytest.raises(KeyboardInterrupt):
        main.on_local_main(interrupted)
    other, _ = on_rank(False, gathered=sent)
    with pytest.raises(RuntimeError, match="another node's local main process failed: KeyboardInterrupt"):
        other.on_local_main(interrupted)
