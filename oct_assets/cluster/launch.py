"""How a batch job starts the trainer: plain python for one process, else `torchrun` per node."""

from __future__ import annotations

import shlex

TRAIN_MODULE = "oct_assets.ml.train"
# torchrun's rendezvous port: derived from the job id, so two jobs sharing a node do not collide.
RDZV_PORT = "$((20000 + SLURM_JOB_ID % 20000))"
# The head node (the first of the job's nodes) by the address Slurm itself reaches it at, its
# NodeAddr (which defaults to the node's name): a NodeName may be an alias that no other node
# can resolve (NodeName=gpu01 NodeHostname=... NodeAddr=...).
HEAD_ADDRESS = [
    'OCT_RDZV_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)',
    'OCT_RDZV_HOST=$(scontrol show node -o "$OCT_RDZV_NODE"'
    " | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')",
    "OCT_RDZV_HOST=${OCT_RDZV_HOST:-$OCT_RDZV_NODE}",
]


def procs_per_node(ntasks_per_node: int, gpus_per_node: int) -> int:
    """Training processes per node: one per GPU where GPUs are asked for, else one per task."""
    return gpus_per_node or ntasks_per_node


def launch(python: str, train_args: str, *, nodes: int, per_node: int) -> tuple[list[str], str]:
    """Setup lines and the command that start `python -m oct_assets.ml.train` in a batch job.

    One process overall: plain python. Otherwise one `torchrun` per node through `srun`
    (`python -m torch.distributed.run`, so the node's `python` setting also picks torchrun),
    which starts `per_node` ranks there and meets the others at the head node's c10d rendezvous
    (`HEAD_ADDRESS`). A single node rendezvous on 127.0.0.1 and needs no network. Across nodes,
    each node's own hostname must resolve (torch's c10d rendezvous looks it up and fails with
    `socket.gaierror` otherwise), and gloo binds to that address unless `GLOO_SOCKET_IFNAME`
    (NCCL: `NCCL_SOCKET_IFNAME`, set in `slurm.setup`) names the interface the nodes share.
    """
    py = shlex.quote(python)
    if nodes * per_node == 1:
        return [], f"{py} -m {TRAIN_MODULE} {train_args}"
    setup = ["OCT_RDZV_HOST=127.0.0.1"] if nodes == 1 else HEAD_ADDRESS
    setup = [
        *setup,
        f"OCT_RDZV_PORT={RDZV_PORT}",
        'echo "[oct] rendezvous at $OCT_RDZV_HOST:$OCT_RDZV_PORT for $SLURM_JOB_NODELIST"',
    ]
    command = (
        "srun --nodes=$SLURM_NNODES --ntasks=$SLURM_NNODES --ntasks-per-node=1"
        f" --cpus-per-task=$(({per_node} * ${{SLURM_CPUS_PER_TASK:-1}}))"
        f" {py} -m torch.distributed.run --nnodes $SLURM_NNODES --nproc-per-node {per_node}"
        " --rdzv-id $SLURM_JOB_ID --rdzv-backend c10d"
        " --rdzv-endpoint $OCT_RDZV_HOST:$OCT_RDZV_PORT"
        f" -m {TRAIN_MODULE} {train_args}"
    )
    return setup, command
