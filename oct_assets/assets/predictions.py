"""`predictions` and `cluster_predictions`: one evaluation of a model on the sample's test split."""

from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    MetadataValue,
    Output,
    asset,
)

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.images import reduced_sample
from oct_assets.assets.metadata import per_class_table, png_markdown
from oct_assets.assets.model import trained_model
from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.contracts.assets import CLUSTER_PREDICTIONS, PREDICTIONS, REDUCED_SAMPLE
from oct_assets.contracts.formats import (
    CAM_GRID_PNG,
    CONFUSION_MATRIX_PNG,
    METRICS_JSON,
    PREDICTIONS_CSV,
    interval_text,
)
from oct_assets.ml.version import ML_CODE_VERSION
from oct_assets.store.artifact import Artifact


def after_new_model(model: AssetsDefinition) -> AutomationCondition:
    """Eager on `model` only: run when the model has a new materialisation (or when this asset
    is newly missing), not when `reduced_sample` alone changes.

    A new sample with an old model would score that model on a test split it may have trained
    on; the model's own rebuild brings the new sample with it.
    """
    name = model.key.to_user_string()
    deps_updated = AutomationCondition.any_deps_updated()
    only_model = deps_updated.allow(AssetSelection.assets(model)).with_label(f"{name} updated")
    eager = AutomationCondition.eager().replace("any_deps_updated", only_model)
    return eager.with_label(f"eager after {name}")


def build_predictions_asset(name: str, model: AssetsDefinition) -> AssetsDefinition:
    """An asset that evaluates `model` on every test image of `reduced_sample`."""

    @asset(
        name=name,
        group_name=GROUP,
        code_version=ML_CODE_VERSION,
        ins={"model": AssetIn(model.key), "reduced_sample": AssetIn(reduced_sample.key)},
        automation_condition=after_new_model(model),
        description=f"Predictions, metrics and class-activation maps of "
        f"`{model.key.to_user_string()}` on the test split of `reduced_sample`.",
    )
    def _predictions(
        context: AssetExecutionContext, model: Artifact, reduced_sample: Artifact
    ) -> Output[Artifact]:
        def build(tmp: Path) -> dict[str, Any]:
            from oct_assets.ml.predict import evaluate

            context.log.info(f"predicting the test split of {reduced_sample.path}")
            metrics = evaluate(model.path, reduced_sample.path, tmp)
            context.log.info(f"accuracy {metrics['accuracy']:.4f} on {metrics['n_images']} images")
            return {"metrics": metrics}

        return salted_output(
            context,
            config={},
            upstream={"model": model.salt, REDUCED_SAMPLE: reduced_sample.salt},
            build=build,
            describe=describe_predictions,
        )

    return _predictions


def describe_predictions(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    m = s["metrics"]
    meta: dict[str, Any] = {
        "accuracy": float(m["accuracy"]),
        "accuracy_95ci": interval_text(m.get("accuracy_ci95")),
        "patient_accuracy": m.get("patient_accuracy"),
        "patient_accuracy_95ci": interval_text(m.get("patient_accuracy_ci95")),
        "macro_f1": float(m["macro_f1"]),
        "macro_roc_auc": m.get("macro_roc_auc"),
        "n_images": int(m["n_images"]),
        "n_patients": m.get("n_patients"),
        "per_class": per_class_table(m),
        "predictions_csv": MetadataValue.path(str(folder / PREDICTIONS_CSV)),
        "metrics_json": MetadataValue.path(str(folder / METRICS_JSON)),
    }
    for key, png in (("confusion_matrix", CONFUSION_MATRIX_PNG), ("cam_grid", CAM_GRID_PNG)):
        if (folder / png).is_file():
            meta[key] = png_markdown(folder / png, key)
    return {k: v for k, v in meta.items() if v is not None}  # older metrics.json lack some


predictions = build_predictions_asset(PREDICTIONS, trained_model)
cluster_predictions = build_predictions_asset(CLUSTER_PREDICTIONS, cluster_model)
