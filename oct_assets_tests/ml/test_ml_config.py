"""TrainConfig validation and JSON round trip."""

import json

import pytest

from oct_assets.ml.config import REAL_DATA_DEFAULTS, TrainConfig, real_data_config


def test_round_trip_through_json():
    config = TrainConfig(epochs=3, learning_rate=1e-3, fit="crop")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="epoch, lr"):
        TrainConfig.from_dict({"epoch": 3, "lr": 0.1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("image_size", -1),
        ("learning_rate", 0.0),
        ("val_fraction", 1.0),
        ("device", "tpu"),
        ("fit", "pad"),
        ("epochs", "3"),
        ("augment", "mixup"),
        ("crop_size", 64),  # not below the default image_size of 64
        ("batch_size", True),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig.from_dict({field: value})


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(ValueError, match="compact, seed"):
        TrainConfig(architecture="resnet")


def test_int_accepted_for_float_fields():
    assert TrainConfig.from_dict({"learning_rate": 1}).learning_rate == 1.0


def test_real_data_defaults_are_a_valid_config():
    config = real_data_config()
    assert {k: getattr(config, k) for k in REAL_DATA_DEFAULTS} == REAL_DATA_DEFAULTS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_decay", 1e309),
        ("epochs", 1_000_000_000),
        ("image_size", 100_000),
        ("learning_rate", 1e30),
    ],
)
def test_absurd_values_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig.from_dict({field: value})


def test_a_model_json_from_an_older_version_still_loads():
    """Model folders never change, so configs written by older versions must load."""
    assert TrainConfig.from_saved({"augment": True}).augment == "affine"
    assert TrainConfig.from_saved({"augment": False, "data_path": "cache"}).augment == "none"
    with pytest.raises(ValueError, match=r"TrainConfig\.augment"):
        TrainConfig.from_dict({"augment": True})  # a user's setting stays strict
