"""`trained_model`: trains the CNN on `reduced_sample` in its own process through Dagster Pipes."""

import json
from pathlib import Path
from typing import Any, Literal

from dagster import (
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    asset,
)
from pydantic import Field

from oct_assets.artifact import Artifact
from oct_assets.assets.images import GROUP
from oct_assets.assets.salted import salted_output
from oct_assets.constants import data_dir
from oct_assets.resources.training import TrainingEnvironment

MODEL_CODE_VERSION = "1"


class TrainConfigSchema(Config):
    """Training settings; the defaults train the embedded demo in seconds on a laptop CPU."""

    architecture: Literal["compact", "seed"] = Field(
        default="compact", description="compact grayscale CNN, or the seed's Keras network"
    )
    epochs: int = Field(default=12, ge=1, le=1000)
    image_size: int = Field(default=128, ge=32, le=1024, description="square input side")
    batch_size: int = Field(default=32, ge=1, le=4096)
    learning_rate: float = Field(default=3e-3, gt=0, le=1.0)
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto")


def cache_dir() -> Path:
    """Decoded-image caches, shared by every run and keyed by sample salt and image size."""
    return data_dir() / "cache"


@asset(group_name=GROUP, code_version=MODEL_CODE_VERSION)
def trained_model(
    context: AssetExecutionContext,
    config: TrainConfigSchema,
    reduced_sample: Artifact,
    pipes_subprocess_client: PipesSubprocessClient,
    training_environment: TrainingEnvironment,
) -> Output[Artifact]:
    """A CNN trained on the sample: `model.pt` (a state_dict) and `model.json` in its folder."""
    cfg = config.model_dump()

    def build(tmp: Path) -> dict[str, Any]:
        config_file = tmp / "train_config.json"
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
                "--cache-dir",
                str(cache_dir()),
            ],
            env=training_environment.env(),
        )
        reported = {k: v.value for k, v in invocation.get_materialize_result().metadata.items()}
        model_json = json.loads((tmp / "model.json").read_text())
        return {"model": model_json, "reported": reported}

    return salted_output(
        context,
        code_version=MODEL_CODE_VERSION,
        config=cfg,
        upstream={"reduced_sample": reduced_sample.salt},
        build=build,
        describe=describe_model,
    )


def describe_model(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"model_file": MetadataValue.path(str(folder / "model.pt"))}
    for key, value in s.get("reported", {}).items():
        if isinstance(value, (int, float, str, bool)):
            meta[key] = value
    meta["model_json"] = MetadataValue.json(s["model"])
    return meta
