"""`predictions` and `cluster_predictions`: one evaluation of a model on the sample's test split."""

from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, MetadataValue, Output, asset

from oct_assets.artifact import Artifact
from oct_assets.assets.images import GROUP
from oct_assets.assets.model import cache_dir
from oct_assets.assets.salted import salted_output
from oct_assets.pictures import png_markdown
from oct_assets.sensors import after_new_model

PREDICTIONS_CODE_VERSION = "1"


def build_predictions_asset(name: str, model_asset: str) -> AssetsDefinition:
    """An asset that evaluates `model_asset` on every test image of `reduced_sample`."""

    @asset(
        name=name,
        group_name=GROUP,
        code_version=PREDICTIONS_CODE_VERSION,
        ins={"model": AssetIn(model_asset), "reduced_sample": AssetIn("reduced_sample")},
        automation_condition=after_new_model(model_asset),
        description=f"Predictions, metrics and class-activation maps of `{model_asset}` on the "
        "test split of `reduced_sample`.",
    )
    def _predictions(
        context: AssetExecutionContext, model: Artifact, reduced_sample: Artifact
    ) -> Output[Artifact]:
        def build(tmp: Path) -> dict[str, Any]:
            from oct_assets.ml.predict import evaluate

            context.log.info(f"predicting the test split of {reduced_sample.path}")
            metrics = evaluate(model.path, reduced_sample.path, tmp, cache_dir=cache_dir())
            context.log.info(f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images")
            return {"metrics": metrics}

        return salted_output(
            context,
            code_version=PREDICTIONS_CODE_VERSION,
            config={},
            upstream={"model": model.salt, "reduced_sample": reduced_sample.salt},
            build=build,
            describe=describe_predictions,
        )

    return _predictions


def describe_predictions(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    m = s["metrics"]
    meta: dict[str, Any] = {
        "accuracy": float(m["accuracy"]),
        "macro_f1": float(m["macro_f1"]),
        "n_images": int(m["n_images"]),
        "per_class": per_class_table(m),
        "predictions_csv": MetadataValue.path(str(folder / "predictions.csv")),
        "metrics_json": MetadataValue.path(str(folder / "metrics.json")),
    }
    for key, png in (("confusion_matrix", "confusion_matrix.png"), ("cam_grid", "cam_grid.png")):
        if (folder / png).is_file():
            meta[key] = png_markdown(folder / png, key)
    return meta


def per_class_table(m: dict[str, Any]) -> MetadataValue:
    lines = ["| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for c in m["classes"]:
        p = m["per_class"][c]
        lines.append(
            f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {p['support']} |"
        )
    return MetadataValue.md("\n".join(lines))


predictions = build_predictions_asset("predictions", "trained_model")
cluster_predictions = build_predictions_asset("cluster_predictions", "cluster_model")
