"""`ensemble_model` (the fold models of every seed averaged into one model folder) and
`ensemble_predictions` (it, scored on the sample's test split as `predictions` scores one model).

The ensemble trains the fold models it lacks itself, through the same salted folders as the
`cv_model` partitions, so either path reuses the other's; it depends on `reduced_sample` alone,
so `dagster asset materialize --select '*ensemble_predictions'` needs no partition option.
"""

from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset
from pydantic import Field

from oct_assets.assets.cv import (
    CV_MODEL,
    FOLDS,
    Member,
    ensure_member,
    members_table,
    record_partition,
)
from oct_assets.assets.images import reduced_sample
from oct_assets.assets.model import TrainedModelConfig, training_config
from oct_assets.assets.predictions import build_predictions_asset
from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.contracts.assets import ENSEMBLE_PREDICTIONS, REDUCED_SAMPLE
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.store.artifact import Artifact


class EnsembleModelConfig(TrainedModelConfig):
    """The fold models' recipe (as `cv_model`'s config: the same values reuse its partitions)
    and the seeds beyond `seed` whose fold models join the ensemble."""

    extra_seeds: list[int] = Field(
        default_factory=list,
        description="more training seeds: each adds one model per fold (the others are reused)",
    )


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"reduced_sample": AssetIn(reduced_sample.key)},
    description=f"The {FOLDS} `cv_model` fold models of each seed, averaged: a model folder "
    "whose `model.json` names its members and holds no weights (`oct_assets.ml.ensemble`).",
)
def ensemble_model(
    context: AssetExecutionContext, config: EnsembleModelConfig, reduced_sample: Artifact
) -> Output[Artifact]:
    values = config.model_dump()
    extra = values.pop("extra_seeds")
    cfg = training_config(context, values)
    seeds = list(dict.fromkeys([cfg["seed"], *extra]))
    members = [Member(f, {**cfg, "seed": s}) for s in seeds for f in range(FOLDS)]
    done = [(m, *ensure_member(context, m, reduced_sample)) for m in members]
    for m, art, hit in done[:FOLDS]:  # the partitions are the folds of `seed`
        record_partition(context, m, art, hit)
    salts = [art.salt for _, art, _ in done]

    def build(tmp: Path) -> dict[str, Any]:
        from oct_assets.ml.ensemble import check_members, ensemble_info

        dirs = [art.path for _, art, _ in done]
        infos = [ModelInfo.read(d) for d in dirs]
        check_members(tmp, infos, dirs)
        info = ensemble_info([(CV_MODEL, s) for s in salts], infos, reduced_sample.salt)
        info.write(tmp)
        return {"model": info.to_json(), "cache_hits": sum(hit for *_, hit in done)}

    def describe(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
        return {
            "members": members_table(done),
            "n_members": len(done),
            "seeds": MetadataValue.json(seeds),
            "model_json": MetadataValue.json(s["model"]),
        }

    return salted_output(
        context,
        config={**cfg, "folds": FOLDS, "seeds": seeds},
        upstream={REDUCED_SAMPLE: reduced_sample.salt, "members": ",".join(salts)},
        build=build,
        describe=describe,
    )


ensemble_predictions = build_predictions_asset(ENSEMBLE_PREDICTIONS, ensemble_model)
