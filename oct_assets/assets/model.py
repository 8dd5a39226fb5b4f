"""`trained_model`: trains the CNN on `reduced_sample` in its own process through Dagster Pipes."""

import json
import shutil
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    asset,
)

from oct_assets.assets.config_from import dagster_config_from
from oct_assets.assets.salted import GROUP, asset_salt, salted_output
from oct_assets.contracts.assets import REDUCED_SAMPLE
from oct_assets.contracts.formats import MODEL_PT, TRAIN_CONFIG_JSON
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.version import ML_CODE_VERSION
from oct_assets.resources.training import TrainingEnvironment
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import salted_dir

# `<data_dir>/trained_model/.checkpoints/<salt>/`: beside the salted folders, not inside the
# temporary build folder (a failed build's is removed, a killed one's swept), so a run killed
# or terminated mid-training resumes there; hidden, so neither the sweep of dead builds nor
# anything that lists salts takes it for one.
CHECKPOINTS = ".checkpoints"


TrainedModelConfig = dagster_config_from(TrainConfig, "TrainedModelConfig")


def training_config(context: AssetExecutionContext, values: dict[str, Any]) -> dict[str, Any]:
    """The training settings as this machine trains them (`TrainConfig.for_this_cpu`): what
    the salt hashes. Fails naming the field of a bad setting."""
    asked = TrainConfig.from_dict(values)
    config = asked.for_this_cpu()
    if config != asked:
        context.log.warning(
            "cpu_bf16: this CPU has no bf16 instructions, where bf16 is emulated (~17x slower "
            "than float32): training in float32, salted as cpu_bf16: false"
        )
    return config.to_dict()


@asset(group_name=GROUP, code_version=ML_CODE_VERSION)
def trained_model(
    context: AssetExecutionContext,
    config: TrainedModelConfig,
    reduced_sample: Artifact,
    pipes_subprocess_client: PipesSubprocessClient,
    training_environment: TrainingEnvironment,
) -> Output[Artifact]:
    """A CNN trained on the sample: `model.pt` (a state_dict) and `model.json` in its folder."""
    cfg = training_config(context, config.model_dump())
    upstream = {REDUCED_SAMPLE: reduced_sample.salt}
    checkpoints = checkpoint_dir(context.asset_key.path[-1], asset_salt(context, cfg, upstream))

    def build(tmp: Path) -> dict[str, Any]:
        config_file = tmp / TRAIN_CONFIG_JSON
        config_file.write_text(json.dumps(cfg, indent=2))
        invocation = pipes_subprocess_client.run(
            context=context,
            command=[
                training_environment.executable(),
                "-m",
                "oct_assets.ml.train",
                "--sample",
                str(reduced_sample.path),
                "--out",
                str(tmp),
                "--config",
                str(config_file),
                "--checkpoint-dir",
                str(checkpoints),
            ],
            env=training_environment.env(),
        )
        reported = {k: v.value for k, v in invocation.get_materialize_result().metadata.items()}
        if reported.get("resumed_from_epoch") is not None:
            context.log.info(
                f"resumed from the checkpoint in {checkpoints}: epoch "
                f"{reported['resumed_from_epoch']}, step {reported['resumed_from_step']}"
            )
        return {"model": ModelInfo.read(tmp).to_json(), "reported": reported}

    output = salted_output(
        context, config=cfg, upstream=upstream, build=build, describe=describe_model
    )
    shutil.rmtree(checkpoints, ignore_errors=True)  # the model is published: nothing to resume
    return output


def checkpoint_dir(asset: str, salt: str) -> Path:
    """Where the trainer of `asset` with `salt` keeps its checkpoint until the model is out."""
    return salted_dir(asset, salt).with_name(CHECKPOINTS) / salt


def describe_model(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"model_file": MetadataValue.path(str(folder / MODEL_PT))}
    for key, value in s.get("reported", {}).items():
        if isinstance(value, (int, float, str, bool)):
            meta[key] = value
    meta["model_json"] = MetadataValue.json(s["model"])
    return meta
