"""The asset names, once. Each is the Dagster asset key (the asset function's name), the folder
under `$OCT_DATA_DIR` that holds the asset's salted outputs, and the key of its salt in a
downstream manifest's `upstream`. Libraries that read the salted store import them from here;
`oct_assets_tests/definitions/test_asset_names.py` keeps them equal to the definitions'."""

RAW_OCT_IMAGES = "raw_oct_images"
REDUCED_SAMPLE = "reduced_sample"
TRAINED_MODEL = "trained_model"
PREDICTIONS = "predictions"
CLUSTER_MODEL = "cluster_model"
CLUSTER_PREDICTIONS = "cluster_predictions"
CV_MODEL = "cv_model"
ENSEMBLE_MODEL = "ensemble_model"
ENSEMBLE_PREDICTIONS = "ensemble_predictions"
CV_REPORT = "cv_report"
LABEL_AUDIT = "label_audit"
CHAMPION_MODEL = "champion_model"
INBOX_PREDICTIONS = "inbox_predictions"

ASSET_NAMES: tuple[str, ...] = (
    RAW_OCT_IMAGES,
    REDUCED_SAMPLE,
    TRAINED_MODEL,
    PREDICTIONS,
    CLUSTER_MODEL,
    CLUSTER_PREDICTIONS,
    CV_MODEL,
    ENSEMBLE_MODEL,
    ENSEMBLE_PREDICTIONS,
    CV_REPORT,
    LABEL_AUDIT,
    CHAMPION_MODEL,
    INBOX_PREDICTIONS,
)
