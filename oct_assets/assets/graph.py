"""The asset graph in order: the lists that jobs, sensors and the CLI are derived from."""

from oct_assets.assets.champion import champion_model
from oct_assets.assets.cluster import cluster_model
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
ALL_ASSETS = (*LOCAL_GRAPH, *CLUSTER_BRANCH, *SERVING)
