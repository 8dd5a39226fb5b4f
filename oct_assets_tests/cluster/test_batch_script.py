"""Batch scripts and the trainer's launch line, rendered without a cluster."""

import pytest

from oct_assets.cluster.batch_script import SlurmJobSpec, render_batch_script
from oct_assets.cluster.launch import launch, procs_per_node


def test_render_batch_script() -> None:
    text = render_batch_script(
        SlurmJobSpec(
            name="train",
            command="python -m oct_assets.ml.train --sample s --out o --config c.json",
            workdir="/scratch/u/run1",
            partition="gpu",
            time="0-02:00:00",
            cpus_per_task=8,
            mem="16G",
            gres="gpu:1",
            setup=("source /scratch/u/venv/bin/activate",),
            extra_directives=("--account=proj42",),
        )
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in (
        "--job-name=train",
        "--chdir=/scratch/u/run1",
        "--output=/scratch/u/run1/slurm-%j.log",
        "--partition=gpu",
        "--time=0-02:00:00",
        "--cpus-per-task=8",
        "--mem=16G",
        "--gres=gpu:1",
        "--account=proj42",
    ):
        assert f"#SBATCH {directive}" in lines
    assert lines.index("source /scratch/u/venv/bin/activate") < len(lines) - 1
    assert lines[-1].startswith("python -m oct_assets.ml.train")


def test_spec_validation_names_every_bad_field() -> None:
    with pytest.raises(ValueError, match=r"name=.*time=.*mem=") as info:
        SlurmJobSpec(name="two words", command="true", workdir="/w", time="soon", mem="lots")
    assert "cpus_per_task" not in str(info.value)


def test_render_multi_node_gpu_job_and_its_torchrun_launch() -> None:
    setup, command = launch("python3", "--sample s --out o", nodes=4, per_node=8)
    text = render_batch_script(
        SlurmJobSpec(
            name="ddp",
            command=command,
            workdir="/scratch/u/ddp",
            nodes=4,
            ntasks_per_node=1,
            gpus_per_node=8,
            cpus_per_task=8,
            account="proj42",
            qos="normal",
            constraint="a100&ib",
            extra_directives=("--exclusive",),
            setup=("module load cuda", *setup),
        )
    )
    lines = text.splitlines()
    for directive in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--account=proj42",
        "--qos=normal",
        "--constraint='a100&ib'",
        "--exclusive",
    ):
        assert f"#SBATCH {directive}" in lines
    assert 'OCT_RDZV_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)' in lines
    assert any(
        line.startswith('OCT_RDZV_HOST=$(scontrol show node -o "$OCT_RDZV_NODE"') for line in lines
    )
    assert lines[-1].startswith("srun --nodes=$SLURM_NNODES --ntasks=$SLURM_NNODES")
    assert "-m torch.distributed.run --nnodes $SLURM_NNODES --nproc-per-node 8" in lines[-1]
    assert "--rdzv-backend c10d --rdzv-endpoint $OCT_RDZV_HOST:$OCT_RDZV_PORT" in lines[-1]
    assert lines[-1].endswith("-m oct_assets.ml.train --sample s --out o")
    # One process stays plain python; one node meets on loopback.
    assert launch("py", "--x", nodes=1, per_node=1) == ([], "py -m oct_assets.ml.train --x")
    assert "OCT_RDZV_HOST=127.0.0.1" in launch("py", "--x", nodes=1, per_node=2)[0]
    assert procs_per_node(ntasks_per_node=2, gpus_per_node=0) == 2
    assert procs_per_node(ntasks_per_node=1, gpus_per_node=4) == 4
    with pytest.raises(ValueError, match="gpus_per_node or gres"):
        SlurmJobSpec(name="x", command="true", workdir="/w", gpus_per_node=1, gres="gpu:1")
