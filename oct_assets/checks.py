"""Asset checks: the data each asset holds is fit to build on, and the UI says why not.

Raw images: every image's header and end marker read (no full decode), no unknown class
folder, names that follow the pattern, classes balanced per split. Sample: no patient in both
splits (blocking: nothing trains on leaked data), every class in both splits. Models and
predictions: factories, so `cluster_model` and `cluster_predictions` reuse them in one line.
Heavy modules (torch) load inside the checks that need them.
"""

import csv
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    Config,
    MetadataValue,
    asset_check,
)
from pydantic import Field

from oct_assets.artifact import Artifact
from oct_assets.constants import CLASSES, SPLITS
from oct_assets.image_files import header_problem
from oct_assets.salt import read_manifest, salted_dir

RAW = AssetKey("raw_oct_images")
SAMPLE = AssetKey("reduced_sample")
MIN_CLASS_RATIO = 0.1  # smallest class / largest class per split; Kermany's train split: 0.23
SHOWN = 50  # at most this many offenders are listed in metadata and descriptions


def _listing(title: str, items: Sequence[str]) -> MetadataValue:
    more = f"\n- ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    lines = "\n".join(f"- `{item}`" for item in items[:SHOWN])
    return MetadataValue.md(f"{title}\n\n{lines}{more}")


def _summary(artifact: Artifact) -> dict[str, Any]:
    return read_manifest(artifact.path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- raw_oct_images


@asset_check(asset=RAW, name="images_readable")
def images_readable(raw_oct_images: Artifact) -> AssetCheckResult:
    """Every image in the manifest has a readable header and, for JPEG, an end marker."""
    root = Path(_summary(raw_oct_images)["root"])
    paths = [row["path"] for row in _read_csv(raw_oct_images.path / "manifest.csv")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = pool.map(lambda rel: header_problem(root / rel), paths)
        bad = [f"{root / rel}: {why}" for rel, why in zip(paths, problems, strict=True) if why]
    metadata: dict[str, Any] = {"images_checked": len(paths), "unreadable": len(bad)}
    if bad:
        metadata["unreadable_files"] = _listing("Unreadable or corrupt images:", bad)
    return AssetCheckResult(
        passed=not bad,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"{len(bad)} unreadable image(s), e.g. {bad[0]}" if bad else None,
    )


@asset_check(asset=RAW, name="class_folders_known")
def class_folders_known(raw_oct_images: Artifact) -> AssetCheckResult:
    """No folder under `train/` or `test/` other than the known classes (checked on disk now:
    the scan already refuses them, so this catches folders added since)."""
    root = Path(_summary(raw_oct_images)["root"])
    unknown = []
    for split in SPLITS:
        with os.scandir(root / split) as entries:
            unknown += [
                str(root / split / e.name)
                for e in entries
                if e.is_dir() and not e.name.startswith(".") and e.name not in CLASSES
            ]
    metadata: dict[str, Any] = {"known_classes": ", ".join(CLASSES)}
    if unknown:
        metadata["unknown_folders"] = _listing("Unknown class folders:", sorted(unknown))
    return AssetCheckResult(
        passed=not unknown,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"unknown class folder(s): {', '.join(sorted(unknown))}" if unknown else None,
    )


@asset_check(asset=RAW, name="file_names_follow_pattern")
def file_names_follow_pattern(raw_oct_images: Artifact) -> AssetCheckResult:
    """Every file is `<CLASS>-<patient>-<n>.jpeg` in its class folder (others are left out)."""
    ignored = _summary(raw_oct_images).get("ignored", [])
    metadata: dict[str, Any] = {"files_left_out": len(ignored)}
    if ignored:
        metadata["left_out"] = _listing("Files left out of the manifest:", ignored)
    return AssetCheckResult(
        passed=not ignored,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"{len(ignored)} file(s) left out, e.g. {ignored[0]}" if ignored else None,
    )


def class_ratios(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    """Per split, the smallest class count over the largest (1.0 is perfectly balanced)."""
    return {
        split: min(by_class.values()) / max(max(by_class.values()), 1)
        for split, by_class in counts.items()
    }


@asset_check(asset=RAW, name="class_balance")
def class_balance(raw_oct_images: Artifact) -> AssetCheckResult:
    """Per split, the smallest class has at least `MIN_CLASS_RATIO` of the largest's images."""
    counts = _summary(raw_oct_images)["counts"]
    ratios = class_ratios(counts)
    skewed = {s: r for s, r in ratios.items() if r < MIN_CLASS_RATIO}
    metadata: dict[str, Any] = {f"ratio_{s}": round(r, 4) for s, r in ratios.items()}
    metadata["min_ratio"] = MIN_CLASS_RATIO
    metadata["counts"] = MetadataValue.json(counts)
    return AssetCheckResult(
        passed=not skewed,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        description="; ".join(
            f"{s}: smallest class has {r:.1%} of the largest's images" for s, r in skewed.items()
        )
        or None,
    )


# ---------------------------------------------------------------------------- reduced_sample


def sample_rows(sample: Artifact) -> list[dict[str, str]]:
    return _read_csv(sample.path / "images.csv")


@asset_check(asset=SAMPLE, name="no_patient_in_both_splits", blocking=True)
def no_patient_in_both_splits(reduced_sample: Artifact) -> AssetCheckResult:
    """No patient has images in both train and test. Blocking: nothing trains on leaked data."""
    patients = defaultdict(set)
    for row in sample_rows(reduced_sample):
        patients[row["split"]].add(row["patient"])
    leaked = sorted(patients["train"] & patients["test"])
    metadata: dict[str, Any] = {
        "patients_train": len(patients["train"]),
        "patients_test": len(patients["test"]),
        "patients_in_both": len(leaked),
    }
    if leaked:
        metadata["leaked_patients"] = _listing("Patients in both train and test:", leaked)
    return AssetCheckResult(
        passed=not leaked,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"patient(s) in both splits: {', '.join(leaked[:10])}" if leaked else None,
    )


@asset_check(asset=SAMPLE, name="every_class_in_both_splits")
def every_class_in_both_splits(reduced_sample: Artifact) -> AssetCheckResult:
    """Every class has images in both train and test."""
    counts = Counter((row["split"], row["label"]) for row in sample_rows(reduced_sample))
    missing = [f"{s}/{c}" for s in SPLITS for c in CLASSES if counts[(s, c)] == 0]
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        metadata={f"{s}_{c}": counts[(s, c)] for s in SPLITS for c in CLASSES},
        description=f"no images for {', '.join(missing)}" if missing else None,
    )


# ---------------------------------------------------------------------------- models


def build_model_checks(asset_key: str | AssetKey) -> list[AssetChecksDefinition]:
    """Checks for a model folder (`model.pt` + `model.json`): it loads and answers at its input
    size, and it knows the project's classes. Apply to any model asset with one line."""
    key = AssetKey.from_coercible(asset_key)

    @asset_check(asset=key, name="model_loads")
    def model_loads(model: Artifact) -> AssetCheckResult:
        """The weights load into the recorded architecture, and one blank image at the recorded
        input size gives one score per class."""
        import torch

        from oct_assets.ml.nets import to_input
        from oct_assets.ml.predict import load_model

        try:
            net, meta = load_model(model.path)
            size = int(meta["input"]["size"])
            with torch.inference_mode():
                x = to_input(torch.zeros(1, size, size, dtype=torch.uint8), net.in_channels)
                shape = tuple(net(x).shape)
        except Exception as exc:  # any failure to load is the check's finding, shown in the UI
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                description=f"{model.path} does not load: {type(exc).__name__}: {exc}",
            )
        expected = (1, len(meta["classes"]))
        return AssetCheckResult(
            passed=shape == expected,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "input_size": size,
                "output_shape": str(shape),
                "parameters": sum(p.numel() for p in net.parameters()),
            },
            description=None if shape == expected else f"output {shape}, expected {expected}",
        )

    @asset_check(asset=key, name="model_classes_and_input_size")
    def model_classes_and_input_size(model: Artifact) -> AssetCheckResult:
        """`model.json` names the project's classes, in order, and the input size it was
        configured with."""
        meta = json.loads((model.path / "model.json").read_text())
        configured = _summary(model).get("config", {}).get("image_size")
        size = meta.get("input", {}).get("size")
        problems = []
        if meta.get("classes") != list(CLASSES):
            problems.append(f"classes {meta.get('classes')}, expected {list(CLASSES)}")
        if not isinstance(size, int) or size < 1:
            problems.append(f"input size {size!r} is not a positive integer")
        elif configured is not None and size != configured:
            problems.append(f"input size {size}, but the asset was configured with {configured}")
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            metadata={"classes": ", ".join(meta.get("classes") or []), "input_size": str(size)},
            description="; ".join(problems) or None,
        )

    return [model_loads, model_classes_and_input_size]


# ---------------------------------------------------------------------------- predictions


def _predictions_sample(predictions: Artifact) -> Path:
    """The sample folder these predictions were made on, from their manifest's upstream salt."""
    return salted_dir("reduced_sample", _summary(predictions)["upstream"]["reduced_sample"])


def build_predictions_checks(
    asset_key: str | AssetKey,
    accuracy_floor: float = 0.5,
    accuracy_severity: AssetCheckSeverity = AssetCheckSeverity.WARN,
) -> list[AssetChecksDefinition]:
    """Checks for a predictions folder: one row per test image, probabilities that sum to 1,
    and accuracy above a floor (`accuracy_floor`, overridable per run as op config `floor`)."""
    key = AssetKey.from_coercible(asset_key)

    class AccuracyFloorConfig(Config):
        """The accuracy these predictions should reach on the test split."""

        floor: float = Field(default=accuracy_floor, ge=0.0, le=1.0, description="minimum")

    @asset_check(asset=key, name="one_row_per_test_image")
    def one_row_per_test_image(predictions: Artifact) -> AssetCheckResult:
        """`predictions.csv` has exactly one row for every test image of its sample."""
        sample = _predictions_sample(predictions)
        expected = {r["file"] for r in _read_csv(sample / "images.csv") if r["split"] == "test"}
        rows = Counter(r["file"] for r in _read_csv(predictions.path / "predictions.csv"))
        missing = sorted(expected - rows.keys())
        extra = sorted(rows.keys() - expected)
        repeated = sorted(f for f, n in rows.items() if n > 1)
        metadata: dict[str, Any] = {"test_images": len(expected), "rows": rows.total()}
        for name, items in (("missing", missing), ("extra", extra), ("repeated", repeated)):
            if items:
                metadata[name] = _listing(f"{name.capitalize()} rows:", items)
        problems = [
            f"{len(items)} {name}"
            for name, items in (("missing", missing), ("extra", extra), ("repeated", repeated))
            if items
        ]
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=f"rows vs test images of {sample}: {', '.join(problems)}"
            if problems
            else None,
        )

    @asset_check(asset=key, name="probabilities_sum_to_one")
    def probabilities_sum_to_one(predictions: Artifact) -> AssetCheckResult:
        """Each row's class probabilities lie in [0, 1], sum to 1, and peak at its prediction."""
        rows = _read_csv(predictions.path / "predictions.csv")
        bad = [f"{r['file']}: {why}" for r in rows if (why := _probability_problem(r))]
        metadata: dict[str, Any] = {"rows": len(rows), "bad_rows": len(bad)}
        if bad:
            metadata["bad"] = _listing("Rows whose probabilities are wrong:", bad)
        if not rows:
            bad = ["predictions.csv has no rows"]
        return AssetCheckResult(
            passed=not bad,
            severity=AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=f"{len(bad)} bad row(s), e.g. {bad[0]}" if bad else None,
        )

    @asset_check(asset=key, name="accuracy_above_floor")
    def accuracy_above_floor(
        config: AccuracyFloorConfig, predictions: Artifact
    ) -> AssetCheckResult:
        """Test accuracy reaches the floor (a warning by default: a weak model is still a
        result worth looking at)."""
        floor = config.floor
        accuracy = float(json.loads((predictions.path / "metrics.json").read_text())["accuracy"])
        return AssetCheckResult(
            passed=accuracy >= floor,
            severity=accuracy_severity,
            metadata={"accuracy": accuracy, "floor": floor},
            description=None if accuracy >= floor else f"accuracy {accuracy:.4f} < {floor}",
        )

    return [one_row_per_test_image, probabilities_sum_to_one, accuracy_above_floor]


def _probability_problem(row: dict[str, str], tolerance: float = 1e-4) -> str | None:
    """Why a `predictions.csv` row's probabilities are wrong, or None (values carry 6 decimals,
    hence the tolerance)."""
    try:
        probs = {c: float(row[c]) for c in CLASSES}
    except (KeyError, TypeError, ValueError) as exc:
        return f"missing or non-numeric probability ({exc})"
    if any(not (0.0 <= p <= 1.0) or math.isnan(p) for p in probs.values()):
        return "probability outside [0, 1]"
    total = sum(probs.values())
    if abs(total - 1.0) > tolerance:
        return f"probabilities sum to {total:.6f}"
    predicted = row.get("predicted_class", "")
    if probs.get(predicted, -1.0) < max(probs.values()) - tolerance:
        return f"predicted {predicted!r}, which is not the most probable class"
    return None


RAW_CHECKS = [images_readable, class_folders_known, file_names_follow_pattern, class_balance]
SAMPLE_CHECKS = [no_patient_in_both_splits, every_class_in_both_splits]
