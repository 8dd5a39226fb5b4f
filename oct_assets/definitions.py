"""The code location: wiring only. Heavy modules (torch) load inside the assets and checks that
need them."""

from dagster import Definitions, PipesSubprocessClient, define_asset_job

from oct_assets.assets.images import raw_oct_images, reduced_sample
from oct_assets.assets.model import trained_model
from oct_assets.assets.predictions import predictions
from oct_assets.checks import (
    RAW_CHECKS,
    SAMPLE_CHECKS,
    build_model_checks,
    build_predictions_checks,
)
from oct_assets.io_manager import LatestArtifactIOManager
from oct_assets.resources.training import TrainingEnvironment
from oct_assets.sensors import new_images_sensor

local_assets = [raw_oct_images, reduced_sample, trained_model, predictions]
local_checks = [
    *RAW_CHECKS,
    *SAMPLE_CHECKS,
    *build_model_checks("trained_model"),
    *build_predictions_checks("predictions"),
]

local_graph_job = define_asset_job(
    "local_graph",
    selection=[a.key for a in local_assets],
    description="Scan, sample, train and predict on this machine.",
)

defs = Definitions(
    assets=local_assets,
    asset_checks=local_checks,
    jobs=[local_graph_job],
    sensors=[new_images_sensor],
    resources={
        "io_manager": LatestArtifactIOManager(),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "training_environment": TrainingEnvironment(),
    },
)
