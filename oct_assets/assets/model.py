"""`trained_model`: trains the CNN on `reduced_sample` in its own process through Dagster Pipes."""

import dataclasses
import inspect
import json
import multiprocessing
import typing
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    PipesSubprocessClient,
    asset,
)
from pydantic import Field, create_model

from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.ml.config import RANGES, TrainConfig
from oct_assets.ml.formats import MODEL_JSON, MODEL_PT, TRAIN_CONFIG_JSON
from oct_assets.ml.train import die_with_parent
from oct_assets.resources.training import TrainingEnvironment
from oct_assets.store.artifact import Artifact


def _attribute_docs(cls: type) -> dict[str, str]:
    """The `Attributes:` section of a Google-style docstring, as {name: description}."""
    docs: dict[str, str] = {}
    name = None
    section = inspect.getdoc(cls).split("Attributes:", 1)[-1]
    for line in section.splitlines():
        head, sep, rest = line.strip().partition(": ")
        if sep and line.startswith("    ") and not line.startswith("        "):
            name, docs[head] = head, rest
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return docs


def _dagster_config_from(dc: type) -> type[Config]:
    """A Dagster Config with the fields, types and defaults of the ML dataclass `dc`.

    One definition of the training settings: the ML core's `TrainConfig` (which validates
    itself and runs without Dagster on a cluster node) is the source; this mirrors it for the
    launchpad and run config.
    """
    hints = typing.get_type_hints(dc)
    docs = _attribute_docs(dc)
    fields = {
        f.name: (
            hints[f.name],
            Field(default=f.default, description=docs.get(f.name), **bound(f.name)),
        )
        for f in dataclasses.fields(dc)
    }
    return create_model("TrainedModelConfig", __base__=Config, **fields)


def bound(name: str) -> dict[str, float]:
    """pydantic bounds of a TrainConfig field (`RANGES`), so the launchpad's schema shows them."""
    if name not in RANGES:
        return {}
    low, high = RANGES[name]
    return {"ge": low, "le": high}


TrainedModelConfig = _dagster_config_from(TrainConfig)


@asset(group_name=GROUP, code_version="1")
def trained_model(
    context: AssetExecutionContext,
    config: TrainedModelConfig,
    reduced_sample: Artifact,
    pipes_subprocess_client: PipesSubprocessClient,
    training_environment: TrainingEnvironment,
) -> Output[Artifact]:
    """A CNN trained on the sample: `model.pt` (a state_dict) and `model.json` in its folder."""
    cfg = TrainConfig.from_dict(config.model_dump()).to_dict()  # fails here, naming the field

    def build(tmp: Path) -> dict[str, Any]:
        if multiprocessing.parent_process() is not None:
            # A step process of the multiprocess executor (`dagster asset materialize`): die
            # with the run process, and the trainer dies with this one (kill -9 included).
            die_with_parent()
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
            ],
            env=training_environment.env(),
        )
        reported = {k: v.value for k, v in invocation.get_materialize_result().metadata.items()}
        model_json = json.loads((tmp / MODEL_JSON).read_text())
        return {"model": model_json, "reported": reported}

    return salted_output(
        context,
        config=cfg,
        upstream={"reduced_sample": reduced_sample.salt},
        build=build,
        describe=describe_model,
    )


def describe_model(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"model_file": MetadataValue.path(str(folder / MODEL_PT))}
    for key, value in s.get("reported", {}).items():
        if isinstance(value, (int, float, str, bool)):
            meta[key] = value
    meta["model_json"] = MetadataValue.json(s["model"])
    return meta
