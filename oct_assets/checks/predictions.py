"""Checks of a predictions folder (`predictions`, `cluster_predictions`): one row per test
image, probabilities that sum to 1, and accuracy above a floor. A factory, like the model's."""

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    Config,
    asset_check,
)
from pydantic import Field

from oct_assets.assets.images import reduced_sample
from oct_assets.assets.metadata import listing
from oct_assets.checks.result import check_result, manifest_of
from oct_assets.contracts.assets import REDUCED_SAMPLE
from oct_assets.contracts.formats import (
    CLASSES,
    IMAGES_CSV,
    METRICS_JSON,
    PREDICTIONS_CSV,
    read_csv_rows,
)
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import salted_dir


def _predictions_sample(predictions: Artifact) -> Path:
    """The sample folder these predictions were made on, from their manifest's upstream salt."""
    sample_salt = manifest_of(predictions).upstream[REDUCED_SAMPLE]
    return salted_dir(reduced_sample.key.to_user_string(), sample_salt)


def build_predictions_checks(
    predictions_asset: AssetsDefinition,
    accuracy_floor: float = 0.5,
    accuracy_severity: AssetCheckSeverity = AssetCheckSeverity.WARN,
) -> list[AssetChecksDefinition]:
    """Checks for `predictions_asset`; the floor is overridable per run as op config `floor`."""

    class AccuracyFloorConfig(Config):
        """The accuracy these predictions should reach on the test split."""

        floor: float = Field(default=accuracy_floor, ge=0.0, le=1.0, description="minimum")

    @asset_check(asset=predictions_asset, name="one_row_per_test_image")
    def one_row_per_test_image(predictions: Artifact) -> AssetCheckResult:
        """`predictions.csv` has exactly one row for every test image of its sample."""
        images = read_csv_rows(_predictions_sample(predictions) / IMAGES_CSV)
        expected = {r["file"] for r in images if r["split"] == "test"}
        rows = Counter(r["file"] for r in read_csv_rows(predictions.path / PREDICTIONS_CSV))
        kinds = {
            "missing": sorted(expected - rows.keys()),
            "extra": sorted(rows.keys() - expected),
            "repeated": sorted(f for f, n in rows.items() if n > 1),
        }
        metadata: dict[str, Any] = {"test_images": len(expected), "rows": rows.total()}
        metadata.update(
            {kind: listing(f"{kind} rows:", items) for kind, items in kinds.items() if items}
        )
        return check_result(
            [f"{len(items)} {kind}" for kind, items in kinds.items() if items], metadata=metadata
        )

    @asset_check(asset=predictions_asset, name="probabilities_sum_to_one")
    def probabilities_sum_to_one(predictions: Artifact) -> AssetCheckResult:
        """Each row's class probabilities lie in [0, 1], sum to 1, and peak at its prediction."""
        rows = read_csv_rows(predictions.path / PREDICTIONS_CSV)
        bad = [f"{r['file']}: {why}" for r in rows if (why := _probability_problem(r))]
        return check_result(
            bad or ([] if rows else ["predictions.csv has no rows"]),
            listed_as="bad",
            title="Rows whose probabilities are wrong:",
            metadata={"rows": len(rows), "bad_rows": len(bad)},
        )

    @asset_check(asset=predictions_asset, name="accuracy_above_floor")
    def accuracy_above_floor(
        config: AccuracyFloorConfig, predictions: Artifact
    ) -> AssetCheckResult:
        """Test accuracy reaches the floor (a warning by default: a weak model is still a
        result worth looking at)."""
        metrics = json.loads((predictions.path / METRICS_JSON).read_text())
        accuracy = float(metrics["accuracy"])
        return check_result(
            [] if accuracy >= config.floor else [f"accuracy {accuracy:.4f} < {config.floor}"],
            metadata={"accuracy": accuracy, "floor": config.floor},
            severity=accuracy_severity,
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
