"""`cluster_model` and `cluster_predictions` through Dagster against a real sshd and Slurm."""

import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.graph import CLUSTER_BRANCH, LOCAL_GRAPH
from oct_assets.definitions import cluster_checks
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.train import train
from oct_assets.resources.io_manager import LatestArtifactIOManager, pointer_salt
from oct_assets.store.salt import is_complete, salted_dir
from oct_assets_tests.services.slurm import SlurmCluster
from oct_assets_tests.services.sshd import SshServer

TINY_TRAIN = {"epochs": 2, "image_size": 32, "batch_size": 16, "threads": 1, "decode_workers": 1}
SAMPLE = {"train_per_class": 6, "test_per_class": 3}
QUICK_JOB = {"cpus_per_task": 1, "mem": None, "poll_interval_s": 0.5}  # fits the one-node Slurm


@pytest.fixture
def sample_instance(tiny_tree: Path, data_env: Path) -> Iterator[DagsterInstance]:
    """An instance in which raw_oct_images and reduced_sample are already materialised."""
    instance = DagsterInstance.ephemeral()
    materialize(
        LOCAL_GRAPH[:2],
        instance=instance,
        resources={"io_manager": LatestArtifactIOManager()},
        run_config={"ops": {"reduced_sample": {"config": SAMPLE}}},
    )
    yield instance


def remote_model(server: SshServer, name: str, sample_dir: Path, seed: int) -> str:
    """Train a tiny model locally and put it where the cluster user keeps models."""
    out = server.remote_dir / "models" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train(sample_dir, out, TrainConfig.from_dict({**TINY_TRAIN, "seed": seed}))
    for f in (out.parent, out, *out.iterdir()):
        shutil.chown(f, server.user)
    return f"models/{name}"


def run_cluster(instance: DagsterInstance, server: SshServer, cluster_config: dict, **kwargs):
    return materialize(
        [*LOCAL_GRAPH[:2], *CLUSTER_BRANCH, *cluster_checks],
        selection=[a.key for a in CLUSTER_BRANCH],
        instance=instance,
        resources={"io_manager": LatestArtifactIOManager(), "cluster": server.resource()},
        run_config={"ops": {"cluster_model": {"config": cluster_config}}},
        **kwargs,
    )


def node_python() -> dict:
    """Slurm settings for a Python the unprivileged cluster user can run, with our packages.

    This machine's venv lives under /root (mode 700), which the cluster user cannot enter;
    Debian's python3 is the same 3.11 ABI, so it runs torch from the venv's site-packages.
    """
    system = Path("/usr/bin/python3")
    assert system.exists(), "the Slurm tests run the trainer with Debian's /usr/bin/python3"
    site = sysconfig.get_paths()["purelib"]
    return {"python": str(system), "setup": [f"export PYTHONPATH={site}"]}


def meta(result, asset: str) -> dict:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_fetch_cache_hit_and_changed_remote_model(
    sample_instance: DagsterInstance, sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    sample_dir = salted_dir("reduced_sample", pointer_salt("reduced_sample"))
    path = remote_model(sshd_server, "fetched", sample_dir, seed=1)
    first = run_cluster(sample_instance, sshd_server, {"mode": "fetch", "remote_model_path": path})
    assert first.success
    model = meta(first, "cluster_model")
    assert not model["cache_hit"] and Path(model["path"], "model.pt").is_file()
    assert model["remote_path"] == str(sshd_server.remote_dir / "models" / "fetched")
    assert 0 <= meta(first, "cluster_predictions")["accuracy"] <= 1
    # A 2-epoch model may miss the accuracy floor (a warning); every other check must pass.
    checks = [
        c for c in first.get_asset_check_evaluations() if c.check_name != "accuracy_above_floor"
    ]
    assert len(checks) == 4 and all(c.passed for c in checks), [
        (c.check_name, c.passed) for c in checks
    ]

    again = run_cluster(sample_instance, sshd_server, {"mode": "fetch", "remote_model_path": path})
    assert meta(again, "cluster_model")["cache_hit"]
    assert meta(again, "cluster_model")["salt"] == model["salt"]

    remote_model(sshd_server, "fetched", sample_dir, seed=2)  # a colleague retrained it
    changed = run_cluster(
        sample_instance, sshd_server, {"mode": "fetch", "remote_model_path": path}
    )
    assert not meta(changed, "cluster_model")["cache_hit"]
    assert meta(changed, "cluster_model")["salt"] != model["salt"]
    assert (
        meta(changed, "cluster_predictions")["salt"] != meta(first, "cluster_predictions")["salt"]
    )


def test_fetch_needs_nothing_local(
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
    tiny_sample: Path,
) -> None:
    """Fetch mode on an empty data folder: no reduced_sample, no image tree, a fresh instance."""
    path = remote_model(sshd_server, "fetched-alone", tiny_sample, seed=3)
    data_env.mkdir(parents=True, exist_ok=True)
    assert not any(data_env.iterdir())  # no reduced_sample, no images: nothing local
    result = materialize(
        [cluster_model],
        instance=DagsterInstance.ephemeral(),
        resources={"io_manager": LatestArtifactIOManager(), "cluster": sshd_server.resource()},
        run_config={
            "ops": {"cluster_model": {"config": {"mode": "fetch", "remote_model_path": path}}}
        },
    )
    assert result.success
    assert Path(meta(result, "cluster_model")["path"], "model.pt").is_file()


def test_fetch_missing_remote_model_names_the_path(
    sample_instance: DagsterInstance, sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    result = run_cluster(
        sample_instance,
        sshd_server,
        {"mode": "fetch", "remote_model_path": "models/nothing-here"},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("cluster_model").error.to_string()
    assert str(sshd_server.remote_dir / "models" / "nothing-here" / "model.pt") in error


def test_bad_slurm_setting_fails_before_anything_reaches_the_cluster(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, data_env: Path, tmp_path: Path
) -> None:
    """A typo in `slurm.time` fails the step at once, naming it: nothing is staged, uploaded
    or submitted, and the remote folder is never created (no reduced_sample is needed)."""
    remote = sshd_server.remote_dir / f"untouched-{tmp_path.name}"
    result = materialize(
        [cluster_model],
        instance=DagsterInstance.ephemeral(),
        resources={
            "io_manager": LatestArtifactIOManager(),
            "cluster": sshd_server.resource(remote_dir=str(remote)),
        },
        run_config={
            "ops": {"cluster_model": {"config": {"mode": "train", "slurm": {"time": "1 hour"}}}}
        },
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("cluster_model").error.to_string()
    assert "slurm.time='1 hour'" in error and "reduced_sample" not in error
    assert not remote.exists()


def test_train_on_slurm_end_to_end(
    sample_instance: DagsterInstance,
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
) -> None:
    config = {
        "mode": "train",
        "training": TINY_TRAIN,
        "slurm": {**node_python(), **QUICK_JOB},
    }
    result = run_cluster(sample_instance, sshd_server, config)
    assert result.success
    model = meta(result, "cluster_model")
    assert model["slurm_state"] == "COMPLETED" and model["job_id"] > 0
    assert model["model_json"]["config"]["epochs"] == 2
    usage = model["slurm_usage"]  # this Slurm keeps no accounting: scontrol, and it says so
    assert usage["source"] == "scontrol" and usage["state"] == "COMPLETED"
    assert usage["exit_code"] == 0 and usage["nodes"] == 1 and usage["elapsed_s"] >= 0
    assert usage["cpu_efficiency"] is None and "sacct" in usage["why"]
    staged = model["sample_staging"]
    assert staged["sent_files"] == staged["files"] > 0  # a new sample: all of it, in one stream
    assert is_complete(Path(model["path"]))
    logs = [
        e.message
        for e in sample_instance.all_logs(result.run_id)
        if e.message and f"[slurm {model['job_id']}]" in e.message
    ]
    assert any("epoch" in line for line in logs), "the job log was not streamed into the run log"

    again = run_cluster(sample_instance, sshd_server, config)
    assert meta(again, "cluster_model")["cache_hit"]


def test_failing_job_surfaces_state_and_log_tail(
    sample_instance: DagsterInstance,
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
) -> None:
    config = {
        "mode": "train",
        "training": {**TINY_TRAIN, "seed": 99},
        "slurm": {**QUICK_JOB, "python": "/no/such/python", "timeout_s": 120},
    }
    result = run_cluster(sample_instance, sshd_server, config, raise_on_error=False)
    assert not result.success
    error = result.failure_data_for_node("cluster_model").error.to_string()
    assert "FAILED" in error and "/no/such/python" in error
    folders = list((data_env / "cluster_model").glob("*"))
    assert not any(is_complete(f) for f in folders)


def test_two_task_job_trains_with_ddp_end_to_end(
    sample_instance: DagsterInstance,
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    data_env: Path,
) -> None:
    """Two Slurm tasks on the one node: srun + torchrun (gloo), rank 0 writes the model."""
    one = {"mode": "train", "training": TINY_TRAIN, "slurm": {**node_python(), **QUICK_JOB}}
    two = {**one, "slurm": {**one["slurm"], "ntasks_per_node": 2}}
    result = run_cluster(sample_instance, sshd_server, two)
    model = meta(result, "cluster_model")
    assert model["slurm_state"] == "COMPLETED" and model["world_size"] == 2
    assert model["model_json"]["world_size"] == 2
    job_dir = sshd_server.remote_dir / "jobs" / model["salt"]
    script = next(job_dir.glob("*.sbatch")).read_text()
    assert "--ntasks-per-node=2" in script and "torch.distributed.run" in script
    log = (job_dir / f"slurm-{model['job_id']}.log").read_text()
    assert "rank 0 of 2" in log, log[-2000:]
    # The world size is in the salt: the one-process model is another asset version.
    assert (
        meta(run_cluster(sample_instance, sshd_server, one), "cluster_model")["salt"]
        != (model["salt"])
    )
