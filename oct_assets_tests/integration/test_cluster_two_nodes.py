"""A `nodes: 2` training through `cluster_model` on two real slurmd, each in its own network,
UTS and mount namespace (`services/netns.py`): torchrun's c10d rendezvous and gloo across the
two hosts, against the same world size as two tasks on one node."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.graph import CLUSTER_BRANCH, LOCAL_GRAPH
from oct_assets.contracts.formats import MODEL_PT
from oct_assets.definitions import cluster_checks
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.integration.test_cluster_assets import (
    QUICK_JOB,
    TINY_TRAIN,
    meta,
    node_python,
    sample_instance,  # noqa: F401 - a fixture
)
from oct_assets_tests.services.two_nodes import TwoNodeCluster, two_node_cluster  # noqa: F401


def train(instance: DagsterInstance, cluster: TwoNodeCluster, remote: Path, data: Path, **slurm):
    """Materialise the cluster branch into `remote`; return its metadata, model and metrics.

    The world size is all the salt knows of the layout, so each layout gets its own remote
    folder (else the second would fetch the first's model) and the local outputs are removed
    after reading (else the second would be a local cache hit).
    """
    config = {"mode": "train", "training": TINY_TRAIN, "slurm": {**node_python(), **QUICK_JOB}}
    config["slurm"].update(slurm)
    remote.mkdir(exist_ok=True)
    shutil.chown(remote, cluster.sshd.user, cluster.sshd.user)
    result = materialize(
        [*LOCAL_GRAPH[:2], *CLUSTER_BRANCH, *cluster_checks],
        selection=[a.key for a in CLUSTER_BRANCH],
        instance=instance,
        resources={
            "io_manager": LatestArtifactIOManager(),
            "cluster": cluster.sshd.resource(remote_dir=str(remote)),
        },
        run_config={"ops": {"cluster_model": {"config": config}}},
    )
    model, scored = meta(result, "cluster_model"), meta(result, "cluster_predictions")
    assert model["slurm_state"] == "COMPLETED" and model["world_size"] == 2
    weights = (Path(model["path"]) / MODEL_PT).read_bytes()
    metrics = json.loads(Path(scored["metrics_json"]).read_text())
    log = (remote / "jobs" / model["salt"] / f"slurm-{model['job_id']}.log").read_text()
    for asset in ("cluster_model", "cluster_predictions"):
        shutil.rmtree(data / asset)
    return model, metrics, weights, log


def cache_files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def test_two_nodes_train_and_score_like_two_tasks_on_one_node(
    sample_instance: DagsterInstance,  # noqa: F811
    two_node_cluster: TwoNodeCluster,  # noqa: F811
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
) -> None:
    """Same world size, same salt: two nodes must give the one-node job's model, byte for byte.

    Once with the decode cache on the shared file system (both nodes' local rank 0 fill the
    same cache file, each through its own temporary file: the last rename wins, with the same
    bytes), once with a node-local cache folder, which proves that each node filled its own.
    """
    cluster, home = two_node_cluster, two_node_cluster.sshd.remote_dir
    one, one_scored, one_pt, _ = train(
        sample_instance, cluster, home / "one-node", data_env, ntasks_per_node=2
    )
    two, two_scored, two_pt, log = train(
        sample_instance, cluster, home / "two-nodes", data_env, nodes=2
    )
    assert two["salt"] == one["salt"]
    assert two["slurm_usage"]["nodes"] == 2 and one["slurm_usage"]["nodes"] == 1
    # gloo reduces in the same order at the same world size: the weights are byte-identical.
    assert two_pt == one_pt
    assert two_scored == one_scored
    head = cluster.network.nodes[0]  # node1, the first of the job's nodes
    assert f"job {two['job_id']} on {head.name} " in log, log[-3000:]
    assert f"rendezvous at {head.address}:" in log, log[-3000:]
    assert "rank 0 of 2" in log, log[-3000:]
    shared = cache_files(home / "two-nodes" / "cache")
    data = next(name for name in shared if name.endswith(".u8"))
    assert len(shared) == 2, sorted(shared)  # data + index, no temporary file left behind
    assert shared[data] == cache_files(home / "one-node" / "cache")[data]

    _, local_scored, local_pt, _ = train(
        sample_instance, cluster, cluster.node_local_remote, data_env, nodes=2
    )
    assert local_pt == one_pt and local_scored == one_scored
    assert not any((cluster.node_local_remote / "cache").iterdir())  # not on the login node
    for node in cluster.network.nodes:
        filled = cache_files(cluster.node_local(node.name, cluster.node_local_remote / "cache"))
        assert filled.keys() == shared.keys(), (node.name, sorted(filled))
        assert filled[data] == shared[data]
