"""Run config of `cluster_model`: fetch or train, the training fields, and the Slurm job."""

from typing import Literal

from dagster import Config
from pydantic import Field

from oct_assets.assets.model import TrainedModelConfig
from oct_assets.cluster.training import procs_per_node


class SlurmSettings(Config):
    """The job's allocation and where it runs. Only the world size (nodes x processes per node)
    changes the trained weights, so only it goes into the salt; the rest does not."""

    nodes: int = Field(default=1, ge=1, description="sbatch --nodes")
    ntasks_per_node: int = Field(
        default=1, ge=1, description="sbatch --ntasks-per-node: training processes per node"
    )
    gpus_per_node: int = Field(
        default=0, ge=0, description="sbatch --gpus-per-node; one training process per GPU"
    )
    gres: str | None = Field(
        default=None, description="sbatch --gres (e.g. gpu:a100:4) instead of gpus_per_node"
    )
    cpus_per_task: int = Field(default=4, ge=1, description="sbatch --cpus-per-task")
    mem: str | None = Field(default="8G", description="sbatch --mem (per node)")
    time: str = Field(default="01:00:00", description="sbatch --time")
    partition: str | None = Field(default=None, description="sbatch --partition")
    account: str | None = Field(default=None, description="sbatch --account")
    qos: str | None = Field(default=None, description="sbatch --qos")
    constraint: str | None = Field(default=None, description="sbatch --constraint")
    extra_directives: list[str] = Field(
        default_factory=list, description="further #SBATCH options, e.g. --exclusive"
    )
    python: str = Field(
        default="python3", description="python on the node with torch, numpy and pillow"
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines before training, e.g. 'source ~/venvs/oct/bin/activate'",
    )
    poll_interval_s: float = Field(default=5.0, gt=0, description="seconds between squeue polls")
    timeout_s: float | None = Field(
        default=None, gt=0, description="give up (and scancel) after this many seconds"
    )

    @property
    def world_size(self) -> int:
        return self.nodes * procs_per_node(self.ntasks_per_node, self.gpus_per_node)


class ClusterModelConfig(Config):
    mode: Literal["fetch", "train"] = Field(
        default="fetch", description="fetch an existing remote model, or train one with sbatch"
    )
    remote_model_path: str = Field(
        default="models/latest",
        description="fetch: remote folder with model.pt and model.json; relative paths are "
        "under OCT_CLUSTER_REMOTE_DIR",
    )
    training: TrainedModelConfig = Field(default_factory=TrainedModelConfig)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    remote_image_root: str | None = Field(
        default=None,
        description="train: the OCT2017 tree already on the cluster (absolute, or under"
        " OCT_CLUSTER_REMOTE_DIR); the sample's images are copied there from it, not sent",
    )
    resubmit_failed: bool = Field(
        default=False,
        description="train: submit again when an earlier run's job for this salt failed"
        " (otherwise its state and log tail are reported)",
    )
