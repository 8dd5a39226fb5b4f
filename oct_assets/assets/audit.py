"""`label_audit`: train scans whose out-of-fold prediction confidently disagrees with their
label, ranked, each with its CAM overlay; and near-duplicate scans across patients or splits."""

import base64
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset
from pydantic import Field

from oct_assets.assets.ensemble import ensemble_model
from oct_assets.assets.images import reduced_sample
from oct_assets.assets.salted import GROUP, salted_output
from oct_assets.contracts.assets import ENSEMBLE_MODEL
from oct_assets.contracts.formats import LABEL_AUDIT_CSV, NEAR_BITS, NEAR_DUPLICATES_CSV
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import salted_dir

OVERLAYS = "overlays"  # <rank>.png: the scan with the CAM of its predicted class


class LabelAuditConfig(Config):
    """What counts as a confident disagreement and a near-duplicate."""

    min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="probability of the predicted (other) class"
    )
    shown: int = Field(default=12, ge=0, le=200, description="disagreements with CAM overlays")
    near_bits: int = Field(
        default=NEAR_BITS, ge=0, le=256, description="differing dHash bits (of 256) at most"
    )


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"ensemble_model": AssetIn(ensemble_model.key)},
    description="Train scans the fold models that never saw their patient confidently call "
    "another class (`label_audit.csv`, CAM overlays), and near-duplicate scans across "
    "patients or across train and test (`near_duplicates.csv`).",
)
def label_audit(
    context: AssetExecutionContext, config: LabelAuditConfig, ensemble_model: Artifact
) -> Output[Artifact]:
    def build(tmp: Path) -> dict[str, Any]:
        from oct_assets.contracts.formats import AUDIT_COLUMNS, NEAR_DUPLICATE_COLUMNS
        from oct_assets.contracts.model_info import ModelInfo
        from oct_assets.ml.audit import (
            disagreements,
            leaking_duplicates,
            write_audit_csv,
            write_rows_csv,
        )
        from oct_assets.ml.data import read_sample
        from oct_assets.ml.ensemble import member_dirs
        from oct_assets.ml.folds import out_of_fold

        info = ModelInfo.read(ensemble_model.path)
        sample = read_sample(salted_dir(reduced_sample.key.path[-1], info.sample_salt))
        oof = out_of_fold(member_dirs(ensemble_model.path, info))
        probs = oof.mean_probs()
        found = disagreements(oof.labels, probs, config.min_confidence)
        write_audit_csv(
            tmp / LABEL_AUDIT_CSV, found, oof.files, oof.patients, oof.folds, probs, oof.classes
        )
        (tmp / OVERLAYS).mkdir()
        top = []
        for rank, d in enumerate(found[: config.shown], start=1):
            png = f"{OVERLAYS}/{rank:03d}.png"
            members = [m["dir"] for m in oof.members if m["fold"] == oof.folds[d.row]]
            _write_overlay(tmp / png, members, sample.root / oof.files[d.row], d.predicted)
            row = [rank, oof.files[d.row], oof.patients[d.row], int(oof.folds[d.row])]
            row += [oof.classes[d.label], oof.classes[d.predicted], d.p_label, d.p_predicted]
            top.append({**dict(zip(AUDIT_COLUMNS, row, strict=True)), "overlay": png})
        dups = leaking_duplicates(sample, config.near_bits)
        write_rows_csv(tmp / NEAR_DUPLICATES_CSV, NEAR_DUPLICATE_COLUMNS, dups)
        context.log.info(
            f"{len(found)} confident disagreements among {len(oof.files)} train scans; "
            f"{len(dups)} near-duplicate pairs across patients or splits"
        )
        return {
            "n_scans": len(oof.files),
            "n_disagreements": len(found),
            "top": top,
            "n_near_duplicates": len(dups),
            "n_cross_split": sum(r["split_a"] != r["split_b"] for r in dups),
            "near_duplicates": dups[:50],
        }

    return salted_output(
        context,
        config=config.model_dump(),
        upstream={ENSEMBLE_MODEL: ensemble_model.salt},
        build=build,
        describe=describe_audit,
    )


def _write_overlay(out: Path, members: list[str], scan: Path, predicted: int) -> None:
    """The scan at the fold models' input, under the mean of their CAMs of `predicted`."""
    import numpy as np

    from oct_assets.ml.decode import decode_gray
    from oct_assets.ml.plots import overlay
    from oct_assets.ml.predict import class_activation_maps, load_model

    loaded = [load_model(Path(d)) for d in members]
    geometry = loaded[0][1].input
    image = decode_gray(scan, geometry.size, geometry.fit)
    cams = [class_activation_maps(net, image[None])[0, predicted] for net, _ in loaded]
    overlay(image, np.mean(cams, axis=0)).save(out, format="PNG")


def describe_audit(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    lines = [
        "| rank | scan | patient | label | predicted | p(label) | p(predicted) | CAM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in s["top"]:
        data = base64.b64encode((folder / t["overlay"]).read_bytes()).decode()
        lines.append(
            f"| {t['rank']} | `{t['file']}` | {t['patient']} | {t['label']} | "
            f"{t['predicted']} | {t['p_label']:.3f} | {t['p_predicted']:.3f} | "
            f"![{t['file']}](data:image/png;base64,{data}) |"
        )
    dups = ["| scan | split | patient | scan | split | patient | bits |", "|---" * 7 + "|"]
    dups += [
        f"| `{r['file_a']}` | {r['split_a']} | {r['patient_a']} | `{r['file_b']}` | "
        f"{r['split_b']} | {r['patient_b']} | {r['differing_bits']} |"
        for r in s["near_duplicates"]
    ]
    return {
        "n_scans": s["n_scans"],
        "n_disagreements": s["n_disagreements"],
        "disagreements": MetadataValue.md("\n".join(lines)),
        "label_audit_csv": MetadataValue.path(str(folder / LABEL_AUDIT_CSV)),
        "n_near_duplicates": s["n_near_duplicates"],
        "n_near_duplicates_across_splits": s["n_cross_split"],
        "near_duplicates": MetadataValue.md("\n".join(dups)),
        "near_duplicates_csv": MetadataValue.path(str(folder / NEAR_DUPLICATES_CSV)),
    }
