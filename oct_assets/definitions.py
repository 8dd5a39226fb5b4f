"""The code location: wiring only. Heavy modules (torch, paramiko) load inside the assets and
checks that need them."""

from dagster import Definitions, PipesSubprocessClient, define_asset_job

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.ensemble import ensemble_model, ensemble_predictions
from oct_assets.assets.graph import (
    ALL_ASSETS,
    CLUSTER_BRANCH,
    CROSS_VALIDATION,
    CV_FOLDS,
    LOCAL_GRAPH,
    SERVING,
)
from oct_assets.assets.model import trained_model
from oct_assets.assets.predictions import cluster_predictions, predictions
from oct_assets.checks.images import RAW_CHECKS
from oct_assets.checks.model import build_model_checks
from oct_assets.checks.predictions import build_predictions_checks
from oct_assets.checks.sample import SAMPLE_CHECKS
from oct_assets.resources.cluster import cluster_resource_from_env
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets.resources.training import TrainingEnvironment
from oct_assets.sensors.automation import automation_sensor
from oct_assets.sensors.cluster import cluster_model_sensor
from oct_assets.sensors.images import new_images_sensor
from oct_assets.sensors.inbox import inbox_sensor

LOCAL_GRAPH_JOB = "local_graph"

local_checks = [
    *RAW_CHECKS,
    *SAMPLE_CHECKS,
    *build_model_checks(trained_model),
    *build_predictions_checks(predictions),
]
cluster_checks = [
    *build_model_checks(cluster_model),
    *build_predictions_checks(cluster_predictions),
]

local_graph_job = define_asset_job(
    LOCAL_GRAPH_JOB,
    selection=[a.key for a in LOCAL_GRAPH],
    description="Scan, sample, train and predict on this machine.",
)
cluster_job = define_asset_job(
    "cluster_branch",
    selection=[a.key for a in CLUSTER_BRANCH],
    description="Fetch or train (Slurm over SSH) the cluster model and evaluate it.",
)
serving_job = define_asset_job(
    "serving",
    selection=[a.key for a in SERVING],
    description="Promote the champion among the evaluated models and diagnose the inbox with it.",
)

cv_checks = [
    *build_model_checks(ensemble_model),
    *build_predictions_checks(ensemble_predictions),
]
cross_validation_job = define_asset_job(
    "cross_validation",
    selection=[a.key for a in CROSS_VALIDATION],
    description="Train the patient-grouped fold models of the sample's train split, average "
    "them into an ensemble scored on the test split, report the pooled out-of-fold figures "
    "and audit the labels.",
)
cv_folds_job = define_asset_job(
    "cv_folds",
    selection=[a.key for a in CV_FOLDS],
    description="The fold models as partitions, one per fold (the same folders as the "
    "ensemble's members).",
)

defs = Definitions(
    assets=list(ALL_ASSETS),
    asset_checks=[*local_checks, *cluster_checks, *cv_checks],
    jobs=[local_graph_job, cluster_job, serving_job, cross_validation_job, cv_folds_job],
    sensors=[new_images_sensor, automation_sensor, cluster_model_sensor, inbox_sensor],
    resources={
        "io_manager": LatestArtifactIOManager(),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "training_environment": TrainingEnvironment(),
        "cluster": cluster_resource_from_env(),
    },
)
