"""The asset graph in order: the lists that jobs, sensors and the CLI are derived from."""

from oct_assets.assets.audit import label_audit
from oct_assets.assets.champion import champion_model
from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.cv import cv_model
from oct_assets.assets.cv_report import cv_report
from oct_assets.assets.ensemble import ensemble_model, ensemble_predictions
from oct_assets.assets.images import raw_oct_images, reduced_sample
from oct_assets.assets.inbox import inbox_predictions
from oct_assets.assets.model import trained_model
from oct_assets.assets.predictions import cluster_predictions, predictions

# Scan, sample, train and predict on this machine, in dependency order.
LOCAL_GRAPH = (raw_oct_images, reduced_sample, trained_model, predictions)
# Fetch or train (Slurm over SSH) the cluster model and evaluate it.
CLUSTER_BRANCH = (cluster_model, cluster_predictions)
# Promote a champion among the evaluated models; diagnose the inbox's new scans with it.
SERVING = (champion_model, inbox_predictions)
# Cross-validate on the sample's train split: the fold models (trained by `ensemble_model`, which
# needs no partition option), their ensemble scored on the test split, the pooled out-of-fold
# report and the label audit. `cv_model` is the same fold models as partitions (a backfill of
# every fold runs as one run).
CROSS_VALIDATION = (ensemble_model, ensemble_predictions, cv_report, label_audit)
CV_FOLDS = (cv_model,)
ALL_ASSETS = (*LOCAL_GRAPH, *CLUSTER_BRANCH, *SERVING, *CROSS_VALIDATION, *CV_FOLDS)
