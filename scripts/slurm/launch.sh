#!/bin/bash
# Start the benchmark on every node of a SLURM allocation: one `accelerate launch` per node (through one
# `srun` step), each starting one process per GPU of its node. Called by run_benchmark.sbatch (one node)
# and run_benchmark_multinode.sbatch (M nodes); every argument goes to run_benchmark.py unchanged.
#
# Environment (all optional):
#   BENCH_ROOT             the repository (default: $SLURM_SUBMIT_DIR, i.e. submit from the repository root)
#   BENCH_SLURM_CPU=1      CPU only (tests, CPU clusters): processes per node = the allocation's tasks per node
#   BENCH_PROCS_PER_NODE   override the processes per node (default: the node's GPUs, or tasks per node on CPU)
#   BENCH_SCRIPT           the Python entry script (default: run_benchmark.py)
#   BENCH_SLURM_DRY_RUN=1  print the srun command line instead of running it
set -euo pipefail

ROOT="${BENCH_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}"
cd "$ROOT"
NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"

count_gpus() {  # GPUs SLURM gave this node: SLURM_GPUS_ON_NODE, else the devices it made visible
    if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then echo "$SLURM_GPUS_ON_NODE"; return; fi
    local visible="${CUDA_VISIBLE_DEVICES:-}"
    if [ -n "$visible" ]; then
        # indices or GPU UUIDs; anything else (old SLURM's "NoDevFiles" for a job without GPUs) is none
        local device='([0-9]+|GPU-[0-9a-fA-F-]+|MIG-[0-9A-Za-z/-]+)'
        local pattern="^${device}(,${device})*\$"
        if [[ "$visible" =~ $pattern ]]; then
            echo "$visible" | tr ',' '\n' | grep -c .
        else
            echo 0
        fi
        return
    fi
    # Outside a SLURM job only: inside one, an unrestricted node would show GPUs the job was not given.
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        local n
        n=$(nvidia-smi --list-gpus 2>/dev/null | grep -c .) || true
        echo "${n:-0}"
        return
    fi
    echo 0
}
if [ "${BENCH_SLURM_CPU:-0}" = 1 ]; then
    PER_NODE="${BENCH_PROCS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-1}}"
    export ACCELERATE_USE_CPU=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
    PER_NODE="${BENCH_PROCS_PER_NODE:-$(count_gpus)}"
fi
PER_NODE="${PER_NODE%%(*}"  # SLURM writes repeated counts as "2(x3)"
if ! [ "$PER_NODE" -ge 1 ] 2>/dev/null; then
    echo "launch.sh: no GPU in this allocation (ask for some with --gres=gpu:N or --gpus-per-node=N), or set BENCH_SLURM_CPU=1" >&2
    exit 2
fi

# A requeued job (preemption, node failure) runs this again with the same arguments and continues where
# it stopped: the run folder resumes by itself. SLURM_RESTART_COUNT reaches the workers, and the harness
# then ignores `overwrite` (however it was set), which would wipe the progress the first start made.

# The main process's node and a port derived from the job id (two jobs sharing a node don't collide).
MAIN_NODE="${BENCH_MAIN_IP:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" | head -n 1)}"
PORT="${BENCH_PORT:-$(( 20000 + ${SLURM_JOB_ID:-0} % 20000 ))}"
WORLD=$(( NNODES * PER_NODE ))

# One launcher per node. An explicit --config_file, so a default_config.yaml in a shared home can't fill
# in flags; --machine_rank from $SLURM_NODEID, which must be expanded on each node by the inner shell, not
# here (hence the single quotes): unescaped, every node would get this node's rank 0. The static
# rendezvous puts global rank 0 on machine rank 0, the node whose name is --main_process_ip.
if [ "$WORLD" -gt 1 ]; then
    INNER='exec accelerate launch --config_file "$BENCH_LAUNCH_CONFIG" --multi_gpu --num_machines "$BENCH_NNODES" --machine_rank "$SLURM_NODEID" --main_process_ip "$BENCH_MAIN_NODE" --main_process_port "$BENCH_PORT" --num_processes "$BENCH_WORLD" --rdzv_backend static --same_network "$BENCH_SCRIPT" "$@"'
    CONFIG=accelerate_configs/multinode.yaml
else
    INNER='exec accelerate launch --config_file "$BENCH_LAUNCH_CONFIG" --num_processes 1 ${ACCELERATE_USE_CPU:+--cpu} "$BENCH_SCRIPT" "$@"'
    CONFIG=accelerate_configs/1gpu.yaml
fi
export BENCH_LAUNCH_CONFIG="$CONFIG" BENCH_NNODES="$NNODES" BENCH_MAIN_NODE="$MAIN_NODE" BENCH_PORT="$PORT" \
    BENCH_WORLD="$WORLD" BENCH_SCRIPT="${BENCH_SCRIPT:-run_benchmark.py}"
unset ACCELERATE_CONFIG_FILE

# --kill-on-bad-exit: when one node's launcher fails, the step ends on every node instead of hanging.
# One task per node holding the CPUs the job has on each node (the launcher's processes share them).
if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ -n "${SLURM_NTASKS_PER_NODE:-}" ]; then
    CPUS_PER_TASK="${SLURM_CPUS_PER_TASK%%(*}"   # "2(x3)" -> 2
    TASKS_PER_NODE="${SLURM_NTASKS_PER_NODE%%(*}"
    CPUS=$(( CPUS_PER_TASK * TASKS_PER_NODE ))
else
    CPUS="${SLURM_CPUS_ON_NODE:-1}"
fi
CMD=(srun --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --cpus-per-task="$CPUS"
     bash -c "$INNER" bash "$@")
echo "launch.sh: $NNODES node(s) x $PER_NODE process(es), main node $MAIN_NODE:$PORT" >&2
if [ "${BENCH_SLURM_DRY_RUN:-0}" = 1 ]; then
    printf '%q\n' "${CMD[@]}"
    exit 0
fi
exec "${CMD[@]}"
