"""The code location: wiring only. Heavy modules (torch) load inside the assets and checks that
need them."""

from dagster import Definitions, PipesSubprocessClient, define_asset_job

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.images import raw_oct_images, reduced_sample
from oct_assets.assets.model import trained_model
from oct_assets.assets.predictions import cluster_predictions, predictions
from oct_assets.checks import (
    RAW_CHECKS,
    SAMPLE_CHECKS,
    build_model_checks,
    build_predictions_checks,
)
from oct_assets.io_manager import LatestArtifactIOManager
from oct_assets.resources.cluster import cluster_resource_from_env
from oct_assets.resources.training import TrainingEnvironment
from oct_assets.sensors import automation_sensor, cluster_model_sensor, new_images_sensor

local_assets = [raw_oct_images, reduced_sample, trained_model, predictions]
cluster_assets = [cluster_model, cluster_predictions]
local_checks = [
    *RAW_CHECKS,
    *SAMPLE_CHECKS,
    *build_model_checks("trained_model"),
    *build_predictions_checks("predictions"),
]
cluster_checks = [
    *build_model_checks("cluster_model"),
    *build_predictions_checks("cluster_predictions"),
]

local_graph_job = define_asset_job(
    "local_graph",
    selection=[a.key for a in local_assets],
    description="Scan, sample, train and predict on this machine.",
)
cluster_job = define_asset_job(
    "cluster_branch",
    selection=[a.key for a in cluster_assets],
    description="Fetch or train (Slurm over SSH) the cluster model and evaluate it.",
)

defs = Definitions(
    assets=[*local_assets, *cluster_assets],
    asset_checks=[*local_checks, *cluster_checks],
    jobs=[local_graph_job, cluster_job],
    sensors=[new_images_sensor, automation_sensor, cluster_model_sensor],
    resources={
        "io_manager": LatestArtifactIOManager(),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "training_environment": TrainingEnvironment(),
        "cluster": cluster_resource_from_env(),
    },
)
