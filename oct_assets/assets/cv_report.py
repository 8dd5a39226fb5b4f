"""`cv_report`: the pooled out-of-fold figures of the ensemble's fold models, the figures
`scripts/recipe_cv.py` prints, salted and in the UI."""

import json
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from oct_assets.assets.ensemble import ensemble_model
from oct_assets.assets.metadata import listing, per_class_table, png_markdown
from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.contracts.assets import ENSEMBLE_MODEL
from oct_assets.contracts.formats import CONFUSION_MATRIX_PNG, OOF_CSV, interval_text
from oct_assets.store.artifact import Artifact

CV_REPORT_JSON = "cv_report.json"


@asset(
    group_name=GROUP,
    code_version="2",  # 2: the scans every seed gets wrong
    ins={"ensemble_model": AssetIn(ensemble_model.key)},
    description="Every train scan predicted by the fold models that never saw its patient, "
    "pooled: accuracy, per-class recall, per-patient accuracy with patient-bootstrap "
    "intervals, accuracy by scan width, the confusion matrix, and per seed and fold.",
)
def cv_report(context: AssetExecutionContext, ensemble_model: Artifact) -> Output[Artifact]:
    def build(tmp: Path) -> dict[str, Any]:
        from oct_assets.contracts.files import write_bytes
        from oct_assets.contracts.model_info import ModelInfo
        from oct_assets.ml.ensemble import member_dirs
        from oct_assets.ml.folds import out_of_fold, write_oof_csv
        from oct_assets.ml.plots import confusion_matrix_png

        info = ModelInfo.read(ensemble_model.path)
        oof = out_of_fold(member_dirs(ensemble_model.path, info))
        report = oof.report()
        write_oof_csv(tmp / OOF_CSV, oof)
        (tmp / CV_REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        write_bytes(tmp / CONFUSION_MATRIX_PNG, confusion_matrix_png(report["pooled"]))
        p = report["pooled"]
        context.log.info(
            f"pooled out-of-fold accuracy {p['accuracy']:.4f} on {p['n_images']} train scans "
            f"({len(report['members'])} fold models)"
        )
        return {"report": report}

    return salted_output(
        context,
        config={},
        upstream={ENSEMBLE_MODEL: ensemble_model.salt},
        build=build,
        describe=describe_cv_report,
    )


def describe_cv_report(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    r = s["report"]
    m = r["pooled"]
    widths = ["| scan width | correct | scans | accuracy |", "|---|---|---|---|"] + [
        f"| {w} px | {b['correct']} | {b['n']} | {b['correct'] / b['n']:.3f} |"
        for w, b in m["by_width"].items()
    ]
    members = ["| fold | seed | out-of-fold accuracy | scans |", "|---|---|---|---|"] + [
        f"| {x['fold']} | {x['seed']} | {x['accuracy']:.4f} | {x['n']} |" for x in r["members"]
    ]
    seeds = ["| seed | pooled accuracy |", "|---|---|"] + [
        f"| {seed} | {acc:.4f} |" for seed, acc in r["per_seed"].items()
    ]
    meta: dict[str, Any] = {
        "accuracy": float(m["accuracy"]),
        "accuracy_95ci": interval_text(m.get("accuracy_ci95")),
        "patient_accuracy": m["patient_accuracy"],
        "patient_accuracy_95ci": interval_text(m.get("patient_accuracy_ci95")),
        "macro_f1": float(m["macro_f1"]),
        "macro_roc_auc": m.get("macro_roc_auc"),
        "n_images": int(m["n_images"]),
        "n_patients": m["n_patients"],
        "per_class": per_class_table(m),
        "by_width": MetadataValue.md("\n".join(widths)),
        "per_fold": MetadataValue.md("\n".join(members)),
        "per_seed": MetadataValue.md("\n".join(seeds)),
        "wrong_for_every_seed": listing(
            f"{len(r['wrong_for_every_seed'])} train scans every seed gets wrong",
            r["wrong_for_every_seed"],
        ),
        "oof_csv": MetadataValue.path(str(folder / OOF_CSV)),
        "report_json": MetadataValue.path(str(folder / CV_REPORT_JSON)),
        "confusion_matrix": png_markdown(folder / CONFUSION_MATRIX_PNG, "confusion matrix"),
    }
    return {k: v for k, v in meta.items() if v is not None}
