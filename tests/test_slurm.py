"""Scale-out, for real: the sbatch script under a real single-node SLURM cluster, a two-machine accelerate
run on one host, and the command line the SLURM launcher builds for every node.

Every run here goes through tests/mp_worker.py, which asserts inside each worker that the process group
has the size the test asked for; results must equal a plain 1-process run.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from launch import ROOT, TINY_ARGS, WORKER
from test_multiprocess import assert_same_results

from bench_lib.store import read_results

LAUNCHER = ROOT / "scripts" / "slurm" / "launch.sh"
SBATCH = ROOT / "scripts" / "slurm" / "run_benchmark.sbatch"
MULTINODE = ROOT / "scripts" / "slurm" / "run_benchmark_multinode.sbatch"
SLURM_BINARIES = ("sbatch", "slurmctld", "slurmd", "munged", "sinfo", "scontrol")


SAMPLES = 3  # of the reference's 5: 2 ranks get 2 and 1 (uneven), and the runs stay short


@pytest.fixture
def reference(reference_run):
    """The manifest the scale-out tests run (with `--limit SAMPLES`), and the first SAMPLES rows of its plain
    1-process result (made once per session; rows don't depend on which other samples a run has)."""
    manifest, (out, rows, report) = reference_run
    return manifest, (out, rows[:SAMPLES], report)


def finished(out: Path, world_size: int):
    markers = sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json"))
    assert markers == list(range(world_size))  # every rank finished and saw the world size it was launched for
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["world_size"] == world_size and len(report["timings"]["per_rank"]) == world_size
    return out, read_results(out / "results.jsonl"), report


# --- the command line, on every node --------------------------------------------------------------------


FAKE_SRUN = """#!/usr/bin/env python3
# Records srun's options, then runs the command as every node would: once per node, with its SLURM_NODEID.
import json, os, subprocess, sys
args = sys.argv[1:]
cut = args.index("bash")
with open(os.path.join(os.environ["FAKE_OUT"], "srun.json"), "w") as f:
    json.dump(args[:cut], f)
nodes = int(os.environ["SLURM_JOB_NUM_NODES"])
for node in range(nodes):
    subprocess.run(args[cut:], env={**os.environ, "SLURM_NODEID": str(node)}, check=True)
"""
FAKE_ACCELERATE = """#!/usr/bin/env python3
import json, os, sys
with open(os.path.join(os.environ["FAKE_OUT"], "accelerate-%s.json" % os.environ["SLURM_NODEID"]), "w") as f:
    json.dump({"argv": sys.argv[1:], "use_cpu": os.environ.get("ACCELERATE_USE_CPU"),
               "config_file_env": os.environ.get("ACCELERATE_CONFIG_FILE")}, f)
"""
FAKE_SCONTROL = """#!/bin/sh
# scontrol show hostnames LIST (simple comma-separated lists only)
echo "$3" | tr ',' '\\n'
"""


def launch_dry(tmp_path, script: Path, args: list[str], **slurm_env) -> tuple[list, dict, subprocess.CompletedProcess]:
    """Run an sbatch script outside SLURM, with srun/accelerate/scontrol replaced by recorders."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("accelerate", FAKE_ACCELERATE), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OUT": str(out), "SLURM_SUBMIT_DIR": str(ROOT),
           "HOME": str(tmp_path), "ACCELERATE_CONFIG_FILE": "/shared/home/default_config.yaml", **slurm_env}
    done = subprocess.run(["bash", str(script), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    srun = json.loads((out / "srun.json").read_text()) if (out / "srun.json").exists() else None
    nodes = {p.stem.split("-")[1]: json.loads(p.read_text()) for p in out.glob("accelerate-*.json")}
    return srun, nodes, done


ARGS = ["--config", "configs/qwen_image_edit.yaml", "--dataset", "ORG/BENCH", "--output_dir", "/shared/runs/a b",
        "--editor_kwargs", '{"negative_prompt": "blurry, low res"}', "--columns", "id=$HOME,category=`x`"]


def test_multinode_command_line_gives_every_node_its_own_rank(tmp_path):
    srun, nodes, done = launch_dry(tmp_path, MULTINODE, ARGS, SLURM_JOB_ID="123456", SLURM_JOB_NUM_NODES="2",
                                   SLURM_JOB_NODELIST="gpu-a,gpu-b", SLURM_GPUS_ON_NODE="6", SLURM_CPUS_ON_NODE="32")
    assert done.returncode == 0, done.stderr
    assert "--kill-on-bad-exit=1" in srun and "--ntasks-per-node=1" in srun and "--nodes=2" in srun
    assert sorted(nodes) == ["0", "1"]
    port = str(20000 + 123456 % 20000)
    for node, seen in nodes.items():
        argv = seen["argv"]
        assert argv[0] == "launch"
        opts = dict(zip(argv[1::2], argv[2::2]))
        assert argv[argv.index("--machine_rank") + 1] == node  # escaped: expanded on each node, not once
        assert argv[argv.index("--num_machines") + 1] == "2" and argv[argv.index("--num_processes") + 1] == "12"
        assert (argv[argv.index("--main_process_ip") + 1] == "gpu-a"
                and argv[argv.index("--main_process_port") + 1] == port)
        assert argv[argv.index("--config_file") + 1] == "accelerate_configs/multinode.yaml" and "--multi_gpu" in argv
        assert argv[argv.index("--rdzv_backend") + 1] == "static"
        script = argv.index("run_benchmark.py")
        assert argv[script + 1:] == ARGS  # the recipe and overrides, unchanged (spaces, commas, $, backquotes)
        assert seen["config_file_env"] is None and seen["use_cpu"] is None
        del opts


def test_single_node_and_cpu_switch_and_requeue(tmp_path):
    _, nodes, done = launch_dry(tmp_path / "one", SBATCH, ["--limit", "3"], SLURM_JOB_ID="7", SLURM_JOB_NUM_NODES="1",
                                SLURM_JOB_NODELIST="gpu-a", SLURM_GPUS_ON_NODE="1")
    argv = nodes["0"]["argv"]
    assert done.returncode == 0 and "--multi_gpu" not in argv and argv[argv.index("--num_processes") + 1] == "1"
    _, nodes, done = launch_dry(tmp_path / "cpu", SBATCH, ["--overwrite", "--limit", "3"], SLURM_JOB_ID="7",
                                SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="n1", SLURM_NTASKS_PER_NODE="2",
                                BENCH_SLURM_CPU="1", SLURM_RESTART_COUNT="1")
    argv = nodes["0"]["argv"]
    assert done.returncode == 0 and nodes["0"]["use_cpu"] == "1" and argv[argv.index("--num_processes") + 1] == "2"
    assert argv[-3:] == ["--overwrite", "--limit", "3"]  # unchanged: the harness itself resumes a requeued job
    for visible in ("", "NoDevFiles"):  # a job given no GPU (old SLURM writes NoDevFiles): an error, no CPU run
        _, nodes, done = launch_dry(tmp_path / f"none{visible}", SBATCH, [], SLURM_JOB_ID="7", SLURM_JOB_NUM_NODES="1",
                                    SLURM_JOB_NODELIST="n1", CUDA_VISIBLE_DEVICES=visible)
        assert done.returncode == 2 and "no GPU in this allocation" in done.stderr and not nodes
    _, nodes, done = launch_dry(tmp_path / "visible", SBATCH, [], SLURM_JOB_ID="7", SLURM_JOB_NUM_NODES="1",
                                SLURM_JOB_NODELIST="n1", CUDA_VISIBLE_DEVICES="0,1,2")
    assert done.returncode == 0 and nodes["0"]["argv"][nodes["0"]["argv"].index("--num_processes") + 1] == "3"


# --- two machines on one host -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_through_accelerate_equal_one_process(tmp_path, reference):
    """`--num_machines 2` with `--machine_rank 0` and `1` on 127.0.0.1, one CPU process each."""
    manifest, one = reference
    out, port = tmp_path / "two-machines", free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "BENCH_EXPECT_WORLD_SIZE": "2",
           "PYTHONUNBUFFERED": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    machines = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / "multinode.yaml"), "--multi_gpu", "--num_machines", "2",
               "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--num_processes", "2", "--rdzv_backend", "static", "--same_network", str(WORKER),
               "--dataset", str(manifest), "--limit", str(SAMPLES), "--output_dir", str(out), *TINY_ARGS]
        machines.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True))
    logs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(log[-4000:] for log in logs)
    assert_same_results(one, finished(out, 2))


# --- a real SLURM cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster (munge + slurmctld + slurmd) started as root in a temporary folder and
    stopped by the PIDs it started. Skips where that can't run."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed (missing {missing}; apt install slurm-wlm slurmctld slurmd "
                    "slurm-client munge; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root")
    # munged wants execute permission for everyone on every folder above its socket: pytest's temporary
    # folders are private, so the cluster lives in its own folder under /tmp.
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    folder.chmod(0o755)
    env = {**os.environ, "LOCAL_SLURM_DIR": str(folder)}
    up = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "up.sh")], env=env, capture_output=True, text=True,
                        timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"SLURM_CONF": str(folder / "etc" / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "down.sh")], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_job(job_id: str, env: dict, *, timeout: float) -> tuple[str, str]:
    """The job's final state and exit code, polled every half second (`sbatch --wait` polls every 10 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True,
                               timeout=60)
        fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
        if fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return fields["JobState"], fields.get("ExitCode", "")
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} did not finish in {timeout} s")


def test_sbatch_on_a_real_slurm_cluster_equals_one_process(tmp_path, reference, slurm_cluster):
    manifest, one = reference
    out, log = tmp_path / "slurm-run", tmp_path / "job.out"
    env = {**os.environ, **slurm_cluster, "BENCH_SLURM_CPU": "1", "BENCH_SCRIPT": str(WORKER),
           "BENCH_EXPECT_WORLD_SIZE": "2", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    cmd = ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10", f"--output={log}",
           str(SBATCH), "--dataset", str(manifest), "--limit", str(SAMPLES), "--output_dir", str(out), *TINY_ARGS]
    submitted = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    state, exit_code = wait_for_job(submitted.stdout.strip().split(";")[0], env, timeout=400)
    job_log = log.read_text() if log.exists() else "(no job log)"
    assert (state, exit_code) == ("COMPLETED", "0:0"), f"{state} {exit_code}\n{job_log[-6000:]}"
    assert "launch.sh: 1 node(s) x 2 process(es)" in job_log
    assert_same_results(one, finished(out, 2))


def test_sbatch_scripts_escape_the_rank_and_pass_arguments_through():
    text = LAUNCHER.read_text()
    inner = next(line for line in text.splitlines()
                 if line.strip().startswith("INNER='exec accelerate") and "--machine_rank" in line)
    assert '--machine_rank "$SLURM_NODEID"' in inner  # inside single quotes: expanded per node by srun's shell
    assert "srun --kill-on-bad-exit=1" in text and 'bash -c "$INNER" bash "$@")' in text
    for script in (SBATCH, MULTINODE):
        body = script.read_text()
        assert "#SBATCH --requeue" in body and 'launch.sh" "$@"' in body
        assert "#SBATCH --mem=" in body  # memory asked for, not the cluster's per-CPU default
        assert textwrap.dedent(body).count("#SBATCH --gres") == 0  # GPUs come from the sbatch line: CPU-testable
