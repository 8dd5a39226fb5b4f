"""`cluster_model`: a model trained on a Slurm cluster over SSH, or fetched from it, salted here.

`mode: fetch` copies `model.pt` + `model.json` from a remote folder; the salt hashes their
contents, so an unchanged remote model is a cache hit without any transfer and a changed one
moves everything downstream. `mode: train` runs `python -m oct_assets.ml.train` under `sbatch`
with this project's own ML code (`cluster.training.train_for_salt`: staging, submitting or
following, fetching), streams the job log into the run log; it is salted like `trained_model`
(training config + `reduced_sample`), Slurm's where-and-how-long settings aside. This module
only maps config to the library and its results to metadata.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, Output, asset

from oct_assets.assets.cluster_config import ClusterModelConfig
from oct_assets.assets.images import reduced_sample
from oct_assets.assets.model import describe_model
from oct_assets.assets.salted import GROUP, asset_salt, salted_output
from oct_assets.cluster import models
from oct_assets.cluster.settings import SlurmSettings
from oct_assets.contracts.assets import REDUCED_SAMPLE
from oct_assets.contracts.formats import CLASSES
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.version import ML_CODE_VERSION
from oct_assets.resources.cluster import ClusterResource
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import is_complete

if TYPE_CHECKING:  # paramiko loads with the first session, not with the definitions
    from oct_assets.cluster.training import TrainedOnCluster


@asset(group_name=GROUP, code_version=ML_CODE_VERSION, deps=[reduced_sample])
def cluster_model(
    context: AssetExecutionContext, config: ClusterModelConfig, cluster: ClusterResource
) -> Output[Artifact]:
    """A model from the cluster, verified (sha256 end to end, loads, right classes) and salted.

    `reduced_sample` is a dependency, not a loaded input: fetching needs nothing local, and
    training reads the sample's latest materialisation.
    """
    if config.mode == "fetch":
        return _fetch(context, config, cluster)
    return _train(context, config, cluster)


def _latest_sample(context: AssetExecutionContext) -> Artifact:
    """The sample to train on: the latest materialisation of `reduced_sample`, if complete."""
    event = context.instance.get_latest_materialization_event(reduced_sample.key)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if "path" not in meta or "salt" not in meta:
        raise FileNotFoundError(
            "mode: train needs reduced_sample materialised first; materialise it, e.g."
            " `dagster asset materialize -m oct_assets.definitions --select reduced_sample`"
        )
    path = Path(str(meta["path"].value))
    if not is_complete(path):
        raise FileNotFoundError(f"reduced_sample {path} is missing or incomplete; rebuild it")
    return Artifact(asset=REDUCED_SAMPLE, salt=str(meta["salt"].value), path=path)


def _fetch(
    context: AssetExecutionContext, config: ClusterModelConfig, cluster: ClusterResource
) -> Output[Artifact]:
    model = models.locate(cluster.session, config.remote_model_path)
    context.log.info(f"remote model {model.path}: content sha256 {model.content[:16]}")

    def build(tmp: Path) -> dict[str, Any]:
        models.download_model(
            cluster.session, model.path, tmp, expected=model.sha256, log=context.log.info
        )
        return {"model": _validated_model_json(tmp), "remote": model.path, "content": model.content}

    return salted_output(
        context,
        config={"mode": "fetch", "remote_model_path": model.path},
        upstream={"remote_model_content": model.content},
        build=build,
        describe=describe_cluster_model,
    )


def _train(
    context: AssetExecutionContext, config: ClusterModelConfig, cluster: ClusterResource
) -> Output[Artifact]:
    # Both blocks are checked here, naming the field, before the sample is read or SSH is used.
    training = TrainConfig.from_dict(config.training.model_dump()).to_dict()
    slurm = SlurmSettings.from_dict(config.slurm.model_dump())
    sample = _latest_sample(context)
    salt_config: dict[str, Any] = {"mode": "train", "training": training}
    if slurm.world_size != 1:  # one process keeps the salts it always had
        salt_config["world_size"] = slurm.world_size
    upstream = {REDUCED_SAMPLE: sample.salt}
    salt = asset_salt(context, salt_config, upstream)

    def build(tmp: Path) -> dict[str, Any]:
        from oct_assets.cluster.training import train_for_salt  # loads paramiko

        trained = train_for_salt(
            cluster.session,
            salt=salt,
            sample_dir=sample.path,
            sample_salt=sample.salt,
            training=training,
            slurm=slurm,
            dest=tmp,
            remote_image_root=config.remote_image_root,
            resubmit_failed=config.resubmit_failed,
            record={"dagster_run_id": context.run.run_id},
            log=context.log.info,
            on_log_line=lambda job_id, line: context.log.info(f"[slurm {job_id}] {line}"),
        )
        return {"model": _validated_model_json(tmp), "remote": trained.remote, **_job(trained)}

    return salted_output(
        context,
        config=salt_config,
        upstream=upstream,
        build=build,
        describe=describe_cluster_model,
    )


def _job(trained: "TrainedOnCluster") -> dict[str, Any]:
    """The manifest's account of the job: reused, or its id, state, log, usage and staging."""
    if trained.job is None:
        return {"job": "reused"}
    assert trained.status is not None
    summary: dict[str, Any] = {
        "slurm_usage": trained.usage,
        "job_id": trained.job.job_id,
        "slurm_state": trained.status.state,
        "job_log": trained.job.log_path,
        "world_size": trained.world_size,
        "job_followed": trained.followed,
        # Requeues and preemptions: how often (Slurm's count), epochs redone, time lost.
        "restarts": trained.restarts.to_dict() if trained.restarts else None,
        # The managed env's hash, python, torch, cuda (None: the user's own `slurm.python`).
        "training_environment": env.metadata() if (env := trained.environment) else None,
    }
    if trained.staged is not None:  # none when followed
        staged = trained.staged
        summary["sample_staging"] = {
            "files": staged.files,
            "sent_files": staged.sent_files,
            "sent_bytes": staged.sent_bytes,
            "seconds": round(staged.seconds, 2),
        }
    return summary


def _validated_model_json(folder: Path) -> dict[str, Any]:
    """model.json of a fetched model, after checking that its weights load into its network."""
    from oct_assets.ml.predict import load_model

    info = ModelInfo.read(folder)
    if info.classes != CLASSES:
        raise ValueError(
            f"fetched model has classes {list(info.classes)}, expected {list(CLASSES)}"
        )
    load_model(folder)
    return info.to_json()


def describe_cluster_model(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta = describe_model(folder, s)
    meta["remote_path"] = s["remote"]
    meta.update({key: s[key] for key in _REPORTED if key in s})
    return meta


_REPORTED = ("content", "job", "job_id", "job_log", "job_followed", "slurm_state", "world_size")
_REPORTED += ("slurm_usage", "sample_staging", "training_environment", "restarts")
