"""Batch inference, metrics and class activation maps for a trained model folder."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oct_assets.contracts.errors import DamagedFileError, OctMLError
from oct_assets.contracts.files import write_bytes
from oct_assets.contracts.formats import (
    CAM_GRID_PNG,
    CONFUSION_MATRIX_PNG,
    METRICS_JSON,
    MODEL_JSON,
    MODEL_PT,
    PREDICTIONS_CSV,
)
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.cache import decoded_images
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import Sample, read_sample
from oct_assets.ml.distributed import resolve_device
from oct_assets.ml.ensemble import EnsembleNet, check_members, member_dirs
from oct_assets.ml.metrics import (
    BOOTSTRAP_DRAWS,
    BOOTSTRAP_SEED,
    one_vs_rest_auc,
    patient_bootstrap,
    patient_votes,
)
from oct_assets.ml.nets import build_net, centre_corner, to_input
from oct_assets.ml.plots import cam_grid_png, confusion_matrix_png
from oct_assets.ml.runtime import BatchReader, deterministic_torch, predict_logits

log = logging.getLogger(__name__)

CAM_EXAMPLES = 3  # per class and outcome (correct / wrong) in cam_grid.png


def load_model(model_dir: Path, device: str = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the network from model.json and load model.pt (weights only, no pickled code).

    An ensemble folder (`ml.ensemble`) loads every member the same way and returns their
    `EnsembleNet`; a member that is missing or of another input geometry is refused, named.
    """
    model_dir = Path(model_dir)
    info = ModelInfo.read(model_dir)
    if info.is_ensemble:
        return _load_ensemble(model_dir, info, device)
    weights_path = model_dir / MODEL_PT
    if not weights_path.is_file():
        raise OctMLError(f"model folder {model_dir} has no {weights_path.name}")
    try:
        net = build_net(TrainConfig.from_saved(info.config), len(info.classes))
    except (KeyError, TypeError) as exc:
        raise DamagedFileError(f"{model_dir / MODEL_JSON} is damaged (no {exc} in it)") from exc
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, EOFError, ValueError, OSError) as exc:  # torch's stream errors
        raise DamagedFileError(
            f"{weights_path} is damaged or does not fit {model_dir / MODEL_JSON} ({exc}); "
            f"remove {model_dir} and materialise the model again"
        ) from exc
    return net.to(resolve_device(device)).eval(), info


def _load_ensemble(model_dir: Path, info: ModelInfo, device: str) -> tuple[nn.Module, ModelInfo]:
    dirs = member_dirs(model_dir, info)
    for d in dirs:
        if not (d / MODEL_JSON).is_file():
            raise OctMLError(f"ensemble {model_dir}: member {d} is missing")
    loaded = [load_model(d, device) for d in dirs]
    check_members(model_dir, [m for _, m in loaded], dirs)
    first = loaded[0][1]
    if first.input != info.input or first.classes != info.classes:
        raise OctMLError(f"ensemble {model_dir}: its input or classes differ from its members'")
    flips = [TrainConfig.from_saved(m.config).tta_flip for _, m in loaded]
    net = EnsembleNet([n for n, _ in loaded], flips)
    return net.eval(), info


def class_activation_maps(net: nn.Module, images: np.ndarray) -> np.ndarray:
    """Per-class CAMs, upsampled to the images' shape.

    CAM_c = sum_k w_ck * A_k: the classifier's weights for class c applied to the last
    feature maps A (valid because the head is GAP + one linear layer).

    Args:
        net: a network with `features` and a linear `classifier`.
        images: uint8 (N, H, W) grayscale squares as stored in the decode cache.

    Returns:
        float32 (N, n_classes, H, W); larger means more evidence for that class.
    """
    if isinstance(net, EnsembleNet):  # the mean of the members' maps
        return np.mean([class_activation_maps(m, images) for m in net.members], axis=0)
    device = next(net.parameters()).device
    net.eval()
    with torch.inference_mode():
        x = to_input(torch.from_numpy(np.ascontiguousarray(images)), net.in_channels)
        feats = net.features(x.to(device)).float()
        weight = net.classifier.weight.float()
        cams = torch.einsum("ck,nkhw->nchw", weight, feats)
        cams = _to_image_frame(cams, images.shape[1:], getattr(net, "input_size", 0))
    return cams.cpu().numpy().astype(np.float32)


def _to_image_frame(cams: torch.Tensor, shape: tuple[int, int], seen: int) -> torch.Tensor:
    """Upsample CAMs to the image; a net that sees only the central `seen` square gets its
    maps placed there, the margin it never saw set to each map's minimum (no evidence)."""
    h, w = shape
    if not seen or seen >= min(h, w):
        return F.interpolate(cams, size=(h, w), mode="bilinear", align_corners=False)
    inner = F.interpolate(cams, size=(seen, seen), mode="bilinear", align_corners=False)
    floor = inner.amin(dim=(2, 3), keepdim=True)
    out = floor.expand(-1, -1, h, w).clone()
    top, left = centre_corner(h, w, seen)
    out[..., top : top + seen, left : left + seen] = inner
    return out


def evaluate(
    model_dir: Path,
    sample_dir: Path,
    out_dir: Path,
    cache_dir: Path | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Predict every image of a split and write predictions.csv, metrics.json and two PNGs.

    Returns the metrics dict: `classification_metrics` (accuracy, macro_f1, per_class,
    confusion_matrix with rows = true class, classes, n_images) and `with_uncertainty`'s
    patient-bootstrap intervals, ROC AUC and per-patient accuracy.
    """
    net, info = load_model(model_dir)
    config = TrainConfig.from_saved(info.config)
    sample = read_sample(Path(sample_dir))
    classes = list(info.classes)
    if list(sample.classes) != classes:
        raise OctMLError(
            f"sample classes {list(sample.classes)} differ from the model's classes {classes}"
        )
    rows = sample.indices(split)
    if len(rows) == 0:
        raise OctMLError(f"{sample.root / 'images.csv'} has no images in the {split} split")
    device = resolve_device(config.device)
    size, fit = info.input.size, info.input.fit
    with deterministic_torch(config.seed, config.threads, device):
        images = decoded_images(sample, size, fit, cache_dir, config.decode_workers)
        reader = BatchReader(images, net.in_channels)
        net.to(device, memory_format=torch.channels_last)
        logits = predict_logits(
            net, reader, rows, device, config.batch_size, config.tta_flip, config.amp
        )
        probs = torch.softmax(logits, 1).numpy().astype(np.float64)
        true, pred = sample.labels[rows], probs.argmax(1)
        metrics = with_uncertainty(
            classification_metrics(true, pred, classes), true, probs, sample.patients[rows]
        )
        examples = _cam_examples(true, pred, probs, len(classes))
        cams = class_activation_maps(net.cpu(), images.read(rows[examples])) if examples else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(out_dir / PREDICTIONS_CSV, sample, rows, true, pred, probs, classes)
    write_bytes(out_dir / METRICS_JSON, (json.dumps(metrics, indent=2) + "\n").encode())
    write_bytes(out_dir / CONFUSION_MATRIX_PNG, confusion_matrix_png(metrics))
    tiles = []
    if cams is not None:
        pix = images.read(rows[examples])
        for k, i in enumerate(examples):
            tiles.append(
                {
                    "image": pix[k],
                    "cam": cams[k, pred[i]],
                    "true": classes[true[i]],
                    "pred": classes[pred[i]],
                    "prob": float(probs[i, pred[i]]),
                }
            )
    write_bytes(out_dir / CAM_GRID_PNG, cam_grid_png(tiles, classes))
    log.info("evaluated %d %s images: accuracy %.4f", len(rows), split, metrics["accuracy"])
    return metrics


def classification_metrics(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support, confusion (rows = true)."""
    n = len(classes)
    cm = np.bincount(true * n + pred, minlength=n * n).reshape(n, n)
    per_class, f1s = {}, []
    for c, name in enumerate(classes):
        tp, support, predicted = cm[c, c], cm[c].sum(), cm[:, c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(float(precision), 5),
            "recall": round(float(recall), 5),
            "f1": round(float(f1), 5),
            "support": int(support),
        }
        f1s.append(f1)
    return {
        "accuracy": round(float(np.trace(cm) / max(cm.sum(), 1)), 5),
        "macro_f1": round(float(np.mean(f1s)), 5),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "n_images": int(cm.sum()),
    }


def with_uncertainty(
    metrics: dict[str, Any], true: np.ndarray, probs: np.ndarray, patients: np.ndarray
) -> dict[str, Any]:
    """`classification_metrics` plus what a point accuracy hides: 95% intervals by bootstrap
    over patients, one-vs-rest ROC AUC per class, and the accuracy per patient (majority vote
    over a patient's scans of one diagnosis, `metrics.patient_votes`).

    Adds accuracy_ci95, patient_accuracy, patient_accuracy_ci95, n_patients, macro_roc_auc,
    bootstrap (unit, draws, seed), and recall_ci95 and roc_auc to every per_class entry.
    """
    classes = metrics["classes"]
    n = len(classes)
    pred = probs.argmax(1)
    scans = patient_bootstrap(true, pred == true, patients, n)
    g_true, g_vote, g_patient = patient_votes(true, probs, patients)
    groups = patient_bootstrap(g_true, g_vote == g_true, g_patient, n)
    aucs = one_vs_rest_auc(true, probs)
    known = [a for a in aucs if a is not None]
    per_class = {
        name: {
            **metrics["per_class"][name],
            "recall_ci95": scans["recall"][c],
            "roc_auc": None if aucs[c] is None else round(aucs[c], 5),
        }
        for c, name in enumerate(classes)
    }
    return {
        **metrics,
        "accuracy_ci95": scans["accuracy"],
        "patient_accuracy": round(float(np.mean(g_vote == g_true)), 5),
        "patient_accuracy_ci95": groups["accuracy"],
        "n_patients": len(np.unique(patients)),
        "n_patient_diagnoses": len(g_true),
        "macro_roc_auc": round(float(np.mean(known)), 5) if known else None,
        "per_class": per_class,
        "bootstrap": {"unit": "patient", "draws": BOOTSTRAP_DRAWS, "seed": BOOTSTRAP_SEED},
    }


def _cam_examples(true: np.ndarray, pred: np.ndarray, probs: np.ndarray, n: int) -> list[int]:
    """For each true class: the most confident correct and the most confident wrong cases."""
    chosen = []
    conf = probs[np.arange(len(pred)), pred]
    for c in range(n):
        for correct in (True, False):
            idx = np.flatnonzero((true == c) & ((pred == true) == correct))
            chosen += idx[np.argsort(-conf[idx], kind="stable")][:CAM_EXAMPLES].tolist()
    return chosen


def _write_predictions(
    path: Path,
    sample: Sample,
    rows: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["file", "true_class", "predicted_class", *classes])
    for k, r in enumerate(rows):
        probabilities = [f"{p:.6f}" for p in probs[k]]
        w.writerow([sample.files[r], classes[true[k]], classes[pred[k]], *probabilities])
    write_bytes(path, buf.getvalue().encode())
