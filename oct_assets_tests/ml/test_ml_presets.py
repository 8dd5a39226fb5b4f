"""The full-data preset is a valid training config for one GPU and for several."""

import yaml

from oct_assets.ml.config import TrainConfig
from oct_assets_tests.fixtures_ml import REPO

PRESET = REPO / "oct_assets" / "presets" / "full_data.yaml"


def test_full_data_preset_is_a_train_config_for_any_gpu_count():
    ops = yaml.safe_load(PRESET.read_text())["ops"]
    assert ops["reduced_sample"]["config"]["train_per_class"] is None
    assert ops["reduced_sample"]["config"]["test_per_class"] is None
    config = TrainConfig.from_dict(ops["trained_model"]["config"])
    assert config.device == "auto" and config.amp  # auto: predictions may run without a GPU
    # The train split is unbalanced, the official test split balanced: predict as for the latter.
    assert config.balanced_priors
    # The global batch splits evenly over 1, 2, 4 or 8 GPUs, keeping >= 32 per BatchNorm.
    assert all(config.batch_size % n == 0 and config.batch_size // n >= 32 for n in (1, 2, 4, 8))


def test_full_data_preset_is_valid_run_config():
    import dagster

    from oct_assets.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    dagster.validate_run_config(job, yaml.safe_load(PRESET.read_text()))  # raises naming the key
