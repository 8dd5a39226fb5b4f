"""`cluster_model`: a model trained on a Slurm cluster over SSH, or fetched from it, salted here.

`mode: fetch` copies `model.pt` + `model.json` from a remote folder; the salt hashes their
contents, so an unchanged remote model is a cache hit without any transfer and a changed one
moves everything downstream. `mode: train` uploads `reduced_sample` (skipping files the remote
already has), runs `python -m oct_assets.ml.train` under `sbatch` with this project's own ML
code, streams the job log into the run log, and fetches the checkpoint; it is salted like
`trained_model` (training config + `reduced_sample`), Slurm's where-and-how-long settings aside.
"""

import hashlib
import json
import shlex
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import AssetExecutionContext, Output, asset

from oct_assets.assets.cluster_config import ClusterModelConfig
from oct_assets.assets.images import reduced_sample
from oct_assets.assets.model import describe_model
from oct_assets.assets.salted import GROUP, asset_salt, salted_output
from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.training import launch, partial_dir, procs_per_node, run_or_follow
from oct_assets.dataset.layout import CLASSES
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.formats import (
    IMAGES_CSV,
    MODEL_FILES,
    MODEL_JSON,
    TRAIN_CONFIG_JSON,
    read_csv_rows,
)
from oct_assets.paths import PROJECT_ROOT
from oct_assets.resources.cluster import ClusterResource
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import is_complete

if TYPE_CHECKING:  # paramiko loads with the first session, not with the definitions
    from oct_assets.cluster.ssh import SSHSession


@asset(group_name=GROUP, code_version="2", deps=[reduced_sample])  # 2: DDP, decoder v2
def cluster_model(
    context: AssetExecutionContext, config: ClusterModelConfig, cluster: ClusterResource
) -> Output[Artifact]:
    """A model from the cluster, verified (sha256 end to end, loads, right classes) and salted.

    `reduced_sample` is a dependency, not a loaded input: fetching needs nothing local, and
    training reads the sample's latest materialisation.
    """
    if config.mode == "fetch":
        return _fetch(context, config, cluster)
    return _train(context, config, _latest_sample(context), cluster)


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
    return Artifact(asset="reduced_sample", salt=str(meta["salt"].value), path=path)


def _fetch(
    context: AssetExecutionContext, config: ClusterModelConfig, cluster: ClusterResource
) -> Output[Artifact]:
    remote = cluster.remote_path(config.remote_model_path)
    sums = {name: cluster.session.sha256(f"{remote}/{name}") for name in MODEL_FILES}
    content = model_content_hash(sums)
    context.log.info(f"remote model {remote}: content sha256 {content[:16]}")

    def build(tmp: Path) -> dict[str, Any]:
        _download_model(context, cluster, remote, tmp, expected=sums)
        return {"model": _validated_model_json(tmp), "remote": remote, "content": content}

    return salted_output(
        context,
        config={"mode": "fetch", "remote_model_path": remote},
        upstream={"remote_model_content": content},
        build=build,
        describe=describe_cluster_model,
    )


def model_content_hash(digests: dict[str, str]) -> str:
    """sha256 over the model files' sha256s: what fetch salts on and the sensor compares."""
    return hashlib.sha256("".join(digests[name] for name in MODEL_FILES).encode()).hexdigest()


def _train(
    context: AssetExecutionContext,
    config: ClusterModelConfig,
    sample: Artifact,
    cluster: ClusterResource,
) -> Output[Artifact]:
    training = TrainConfig.from_dict(config.training.model_dump()).to_dict()
    salt_config: dict[str, Any] = {"mode": "train", "training": training}
    if config.slurm.world_size != 1:  # one process keeps the salts it always had
        salt_config["world_size"] = config.slurm.world_size
    upstream = {"reduced_sample": sample.salt}
    salt = asset_salt(context, salt_config, upstream)

    def build(tmp: Path) -> dict[str, Any]:
        remote_out = cluster.remote_path("models", salt)
        if cluster.session.exists(f"{remote_out}/{MODEL_JSON}"):
            context.log.info(f"the cluster already has this model at {remote_out}; fetching it")
            job_info: dict[str, Any] = {"job": "reused"}
        else:
            job_info = _run_training_job(context, config, cluster, sample, training, salt)
        _download_model(context, cluster, remote_out, tmp, expected=None)
        return {"model": _validated_model_json(tmp), "remote": remote_out, **job_info}

    return salted_output(
        context,
        config=salt_config,
        upstream=upstream,
        build=build,
        describe=describe_cluster_model,
    )


def _run_training_job(
    context: AssetExecutionContext,
    config: ClusterModelConfig,
    cluster: ClusterResource,
    sample: Artifact,
    training: dict[str, Any],
    salt: str,
) -> dict[str, Any]:
    """Follow this salt's recorded job, or stage sample and code and submit one; wait for it."""
    from oct_assets.cluster import staging, transfer  # paramiko loads with the first session

    session = cluster.session
    slurm = config.slurm
    job_dir = cluster.remote_path("jobs", salt)
    remote_out = cluster.remote_path("models", salt)

    staging_info: dict[str, Any] = {}

    def prepare() -> SlurmJobSpec:
        remote_sample = cluster.remote_path("samples", sample.salt)
        images = [row["file"] for row in read_csv_rows(sample.path / IMAGES_CSV)]
        staged = staging.stage_folder(
            session,
            sample.path,
            remote_sample,
            key=sample.salt,
            remote_root=config.remote_image_root,
            from_remote_root=images,
        )
        context.log.info(
            f"sample at {remote_sample}: {staged.sent_files} of {staged.files} files sent"
            f" ({staged.sent_bytes / 1e6:.1f} MB, {staged.seconds:.1f}s), all sha256-verified"
            + (f"; repaired {list(staged.repaired)}" if staged.repaired else "")
        )
        staging_info.update(files=staged.files, sent_files=staged.sent_files)
        staging_info.update(sent_bytes=staged.sent_bytes, seconds=round(staged.seconds, 2))
        remote_code = _upload_ml_code(session)
        config_file = f"{job_dir}/{TRAIN_CONFIG_JSON}"
        transfer.write_bytes(session, json.dumps(training, indent=2).encode(), config_file)
        q = shlex.quote
        partial = partial_dir(remote_out)
        train_args = (
            f"--sample {q(remote_sample)} --out {partial} --config {q(config_file)}"
            f" --cache-dir {q(cluster.remote_path('cache'))}"
        )
        per_node = procs_per_node(slurm.ntasks_per_node, slurm.gpus_per_node)
        launch_setup, command = launch(
            slurm.python, train_args, nodes=slurm.nodes, per_node=per_node
        )
        return SlurmJobSpec(
            name=f"oct-train-{salt}",
            command=f"{command} && mv -T {partial} {q(remote_out)}",
            workdir=job_dir,
            output="slurm-%j.log",
            **slurm.model_dump(include=_SPEC_FIELDS),
            extra_directives=tuple(slurm.extra_directives),
            setup=[
                *slurm.setup,
                f"export PYTHONPATH={q(remote_code)}${{PYTHONPATH:+:$PYTHONPATH}}",
                f"mkdir -p {partial}",
                *launch_setup,
            ],
        )

    job, status, followed = run_or_follow(
        session,
        job_dir=job_dir,
        model_dir=remote_out,
        prepare=prepare,
        record={"world_size": slurm.world_size, "dagster_run_id": context.run.run_id},
        resubmit_failed=config.resubmit_failed,
        poll_interval_s=slurm.poll_interval_s,
        timeout_s=slurm.timeout_s,
        on_log_line=lambda job_id, line: context.log.info(f"[slurm {job_id}] {line}"),
        log=context.log.info,
    )
    usage = job_usage(session, job.job_id)
    context.log.info(f"Slurm job {job.job_id} used (from {usage['source']}): {usage}")
    return {
        "slurm_usage": usage,
        "job_id": job.job_id,
        "slurm_state": status.state,
        "job_log": job.log_path,
        "world_size": slurm.world_size,
        "job_followed": followed,
        **({"sample_staging": staging_info} if staging_info else {}),  # none when followed
    }


_SPEC_FIELDS = {
    "nodes",
    "ntasks_per_node",
    "gpus_per_node",
    "gres",
    "cpus_per_task",
    "mem",
    "time",
    "partition",
    "account",
    "qos",
    "constraint",
}


def _upload_ml_code(session: "SSHSession") -> str:
    """Upload `oct_assets/ml` (all the node needs) to a folder named by its content hash."""
    from oct_assets.cluster import transfer

    package = PROJECT_ROOT / "oct_assets"
    files = [package / "__init__.py", *sorted((package / "ml").glob("*.py"))]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    remote_code = session.resolve(f"code/{digest.hexdigest()[:16]}")
    with tempfile.TemporaryDirectory() as stage:
        for f in files:
            target = Path(stage, "oct_assets", f.relative_to(package))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
        transfer.upload_dir(session, Path(stage), remote_code)
    return remote_code


def _download_model(
    context: AssetExecutionContext,
    cluster: ClusterResource,
    remote: str,
    dest: Path,
    expected: dict[str, str] | None,
) -> None:
    """Download the model files (each sha256-verified end to end)."""
    from oct_assets.cluster import transfer

    for name in MODEL_FILES:
        result = transfer.download(cluster.session, f"{remote}/{name}", dest / name)
        if expected is not None and result.sha256 != expected[name]:
            raise RuntimeError(
                f"{remote}/{name} changed during the transfer (sha256 {result.sha256} != "
                f"{expected[name]}); materialise cluster_model again"
            )
        context.log.info(f"fetched {remote}/{name} ({result.size} bytes, {result.seconds:.1f}s)")


def _validated_model_json(folder: Path) -> dict[str, Any]:
    """model.json of a fetched model, after checking that its weights load into its network."""
    from oct_assets.ml.predict import load_model

    model_json = json.loads((folder / MODEL_JSON).read_text())
    if list(model_json.get("classes", [])) != list(CLASSES):
        raise ValueError(
            f"fetched model has classes {model_json.get('classes')}, expected {list(CLASSES)}"
        )
    load_model(folder)
    return model_json


def describe_cluster_model(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta = describe_model(folder, s)
    meta["remote_path"] = s["remote"]
    meta.update({key: s[key] for key in _REPORTED if key in s})
    return meta


_REPORTED = ("content", "job", "job_id", "job_log", "job_followed", "slurm_state", "world_size")
_REPORTED += ("slurm_usage", "sample_staging")
