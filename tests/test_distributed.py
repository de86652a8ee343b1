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
