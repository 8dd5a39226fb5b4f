"""Run config of `cluster_model`: fetch or train, the training fields, and the Slurm job.

The `training` and `slurm` blocks are generated from the libraries' declarations (`TrainConfig`,
`cluster.settings.SlurmSettings`), which also check them when the step starts.
"""

from typing import Literal

from dagster import Config
from pydantic import Field

from oct_assets.assets.config_from import dagster_config_from
from oct_assets.assets.model import TrainedModelConfig
from oct_assets.cluster import settings
from oct_assets.cluster.layout import LATEST_MODEL

SlurmSettings = dagster_config_from(settings.SlurmSettings, "SlurmSettings")


class ClusterModelConfig(Config):
    mode: Literal["fetch", "train"] = Field(
        default="fetch", description="fetch an existing remote model, or train one with sbatch"
    )
    remote_model_path: str = Field(
        default=LATEST_MODEL,
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
        " (otherwise its state and log tail are reported); the new job resumes from the"
        " checkpoint the failed one left",
    )
