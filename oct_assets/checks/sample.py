"""Checks of `reduced_sample`: no patient in both splits (blocking: nothing trains on leaked
data), every class in both splits."""

from collections import Counter, defaultdict

from dagster import AssetCheckResult, asset_check

from oct_assets.assets.images import reduced_sample
from oct_assets.checks.result import check_result
from oct_assets.contracts.formats import CLASSES, IMAGES_CSV, SPLITS, read_csv_rows
from oct_assets.store.artifact import Artifact


@asset_check(asset=reduced_sample, name="no_patient_in_both_splits", blocking=True)
def no_patient_in_both_splits(reduced_sample: Artifact) -> AssetCheckResult:
    """No patient has images in both train and test. Blocking: nothing trains on leaked data."""
    patients = defaultdict(set)
    for row in read_csv_rows(reduced_sample.path / IMAGES_CSV):
        patients[row["split"]].add(row["patient"])
    leaked = sorted(patients["train"] & patients["test"])
    return check_result(
        [f"patient {p} is in both splits" for p in leaked],
        listed_as="leaked_patients",
        title="Patients in both train and test:",
        metadata={
            "patients_train": len(patients["train"]),
            "patients_test": len(patients["test"]),
            "patients_in_both": len(leaked),
        },
    )


@asset_check(asset=reduced_sample, name="every_class_in_both_splits")
def every_class_in_both_splits(reduced_sample: Artifact) -> AssetCheckResult:
    """Every class has images in both train and test."""
    rows = read_csv_rows(reduced_sample.path / IMAGES_CSV)
    counts = Counter((row["split"], row["label"]) for row in rows)
    return check_result(
        [f"no images for {s}/{c}" for s in SPLITS for c in CLASSES if counts[(s, c)] == 0],
        metadata={f"{s}_{c}": counts[(s, c)] for s in SPLITS for c in CLASSES},
    )


SAMPLE_CHECKS = [no_patient_in_both_splits, every_class_in_both_splits]
