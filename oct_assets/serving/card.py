"""A champion's lineage and its model card, from the manifests and files of the salted folders.

Plain Python reading `<data>/<asset>/<salt>/` folders (no torch, no Dagster), so the CLI can
print the lineage without starting anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oct_assets.contracts.assets import RAW_OCT_IMAGES, REDUCED_SAMPLE
from oct_assets.contracts.formats import (
    CAM_GRID_PNG,
    MANIFEST_JSON,
    METRICS_JSON,
    interval_text,
)
from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.contracts.model_info import ModelInfo


def per_class_lines(metrics: dict[str, Any]) -> list[str]:
    """The per-class markdown table of a `metrics.json`: precision, recall with its 95%
    patient-bootstrap interval, F1, one-vs-rest ROC AUC and support (model card and UI)."""
    lines = [
        "| class | precision | recall | recall 95% CI | f1 | ROC AUC | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in metrics["classes"]:
        p = metrics["per_class"][c]
        auc = "n/a" if p.get("roc_auc") is None else f"{p['roc_auc']:.3f}"
        lines.append(
            f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | "
            f"{interval_text(p.get('recall_ci95'))} | {p['f1']:.3f} | {auc} | {p['support']} |"
        )
    return lines


INTENDED_USE = """\
- **A research tool, not a medical device.** It has not been validated for diagnosis; do not
  use it to decide the care of a patient.
- Trained on one public dataset (Kermany et al., OCT2017: Spectralis B-scans from a few
  centres), or on the synthetic demo data when marked so above. Scans from other devices,
  protocols or populations may be classified wrongly without warning.
- Four classes only (CNV, DME, DRUSEN, NORMAL): any other condition is forced into one of them.
- The CAM overlays show where the evidence for the predicted class lies; they are not a
  segmentation and can point at artefacts."""


def _manifest(data: Path, asset: str, salt: str) -> SaltedManifest | None:
    folder = data / asset / salt
    return SaltedManifest.read(folder) if (folder / MANIFEST_JSON).is_file() else None


def _trained_on(info: ModelInfo | None, model: dict[str, Any]) -> str:
    """The sample salt the model's trainer recorded, else the one that scored it."""
    if info is None or info.sample_salt is None:
        return model["sample_salt"]
    return info.sample_salt


def lineage(data: Path, model: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain model -> sample -> image scan behind a champion (`champion.json`'s `model`),
    plus the evaluation: per step its asset, salt, code version, config and key facts.
    A step whose folder is gone says so (`missing`)."""
    steps: list[dict[str, Any]] = []

    def step(asset: str, salt: str | None, **facts: Any) -> SaltedManifest | None:
        m = _manifest(data, asset, salt) if salt else None
        entry = {"asset": asset, "salt": salt, **facts}
        if m is None:
            entry["missing"] = True
        else:
            entry.update(code_version=m.code_version, config=m.config)
        steps.append(entry)
        return m

    model_dir = data / model["model_dir"]
    info = ModelInfo.read(model_dir) if model_dir.is_dir() else None
    architecture = info.architecture if info is not None else None
    step(model["model_asset"], model["model_salt"], architecture=architecture)
    # The sample the model was trained on, as its trainer recorded it; a fetched cluster model
    # may have been trained on another sample than the one whose test split scored it.
    trained_on = _trained_on(info, model)
    sample = step(REDUCED_SAMPLE, trained_on, role="trained on")
    raw_salt = sample.upstream.get(RAW_OCT_IMAGES) if sample is not None else None
    raw = step(RAW_OCT_IMAGES, raw_salt)
    if raw is not None:
        steps[-1].update(
            fingerprint=raw.summary.get("fingerprint"),
            n_images=raw.summary.get("n_images"),
            synthetic=raw.summary.get("synthetic"),
            root=raw.summary.get("root"),
        )
    if trained_on != model["sample_salt"]:
        step(REDUCED_SAMPLE, model["sample_salt"], role="scored on (test split)")
    step(
        model["evaluation_asset"],
        model["evaluation_salt"],
        accuracy=model["accuracy"],
        macro_f1=model["macro_f1"],
    )
    return steps


def model_card_md(data: Path, model: dict[str, Any], rule: dict[str, Any]) -> str:
    """`model_card.md` of a champion: data, recipe, test metrics with 95% CIs, confusion
    matrix, per-class table, CAM grid, lineage salts, intended use and limits."""
    steps = lineage(data, model)
    by_asset = {s["asset"]: s for s in steps}
    info = ModelInfo.read(data / model["model_dir"])
    found = _manifest(data, REDUCED_SAMPLE, _trained_on(info, model))
    sample, sample_config = (found.summary, found.config) if found is not None else ({}, {})
    evaluation = data / model["evaluation_asset"] / model["evaluation_salt"]
    metrics = json.loads((evaluation / METRICS_JSON).read_text())
    classes = metrics["classes"]
    raw = by_asset.get(RAW_OCT_IMAGES, {})
    synthetic = sample.get("synthetic", raw.get("synthetic"))
    out = [
        f"# Model card: {model['model_asset']} {model['model_salt']}",
        "",
        f"Champion under the rule {json.dumps(rule, sort_keys=True)}: test accuracy "
        f"{model['accuracy']:.4f} on sample {model['sample_salt']}.",
        "",
        "## Data",
        "",
        f"- {'**SYNTHETIC** generated images, not real scans' if synthetic else 'real OCT scans'}"
        f" from `{raw.get('root', sample.get('source_root', '?'))}`",
        f"- image-tree fingerprint `{raw.get('fingerprint', '?')}` "
        f"({raw.get('n_images', '?')} images scanned)",
        f"- sample config `{json.dumps(sample_config, sort_keys=True)}`; patients: "
        + ", ".join(f"{k} {v}" for k, v in sample.get("patients", {}).items())
        + " (no patient in both splits)",
        "",
        "| split | " + " | ".join(classes) + " | total |",
        "|---|" + "---|" * (len(classes) + 1),
    ]
    for split, counts in sample.get("counts", {}).items():
        cells = [str(counts.get(c, 0)) for c in classes]
        out.append(f"| {split} | " + " | ".join(cells) + f" | {sum(counts.values())} |")
    out += [
        "",
        "## Recipe",
        "",
        f"`{info.architecture}` network, input {info.input.size} px "
        f"(`{info.input.fit}`), torch {info.torch_version or '?'}, trained on "
        f"{info.device or '?'}:",
        "",
        "```json",
        json.dumps(info.config, indent=2, sort_keys=True),
        "```",
        "",
        f"## Test metrics ({metrics['n_images']} images)",
        "",
        "| metric | value | 95% CI (bootstrap over patients) |",
        "|---|---|---|",
        f"| accuracy (per scan) | {metrics['accuracy']:.4f} | "
        f"{interval_text(metrics.get('accuracy_ci95'))} |",
    ]
    if metrics.get("patient_accuracy") is not None:
        out.append(
            f"| accuracy (per patient, majority vote) | {metrics['patient_accuracy']:.4f} | "
            f"{interval_text(metrics.get('patient_accuracy_ci95'))} |"
        )
    out.append(f"| macro F1 | {metrics['macro_f1']:.4f} | n/a |")
    if metrics.get("macro_roc_auc") is not None:
        out.append(f"| macro ROC AUC (one vs rest) | {metrics['macro_roc_auc']:.4f} | n/a |")
    out += ["", *per_class_lines(metrics)]
    out += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    out += ["| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for c, row in zip(classes, metrics["confusion_matrix"], strict=True):
        out.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    if (evaluation / CAM_GRID_PNG).is_file():
        out += ["", f"![class-activation maps per class]({CAM_GRID_PNG})"]
    out += ["", "## Lineage", "", "| asset | salt | code version | facts |", "|---|---|---|---|"]
    for s in steps:
        facts = {
            k: v
            for k, v in s.items()
            if k not in ("asset", "salt", "code_version", "config") and v is not None
        }
        out.append(
            f"| {s['asset']} | `{s['salt']}` | {s.get('code_version', '?')} | "
            f"{json.dumps(facts, sort_keys=True)} |"
        )
    out += ["", "## Intended use and limits", "", INTENDED_USE, ""]
    return "\n".join(out)
