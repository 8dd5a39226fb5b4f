"""Evaluation outputs, metrics and class activation maps."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from oct_assets.ml.cache import decoded_images
from oct_assets.ml.data import read_sample
from oct_assets.ml.predict import (
    class_activation_maps,
    classification_metrics,
    evaluate,
    load_model,
)
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import CLASSES


@pytest.fixture(scope="module")
def trained(tiny_sample, tmp_path_factory):
    from oct_assets.ml.config import TrainConfig

    root = tmp_path_factory.mktemp("model")
    config = TrainConfig(
        epochs=6,
        image_size=32,
        batch_size=8,
        width=4,
        blocks=3,
        decode_workers=1,
        val_fraction=0.0,
        tta_flip=True,
    )
    train(tiny_sample, root / "model", config, cache_dir=root / "cache")
    return root


def test_evaluate_writes_all_outputs(trained, tiny_sample, tmp_path):
    metrics = evaluate(trained / "model", tiny_sample, tmp_path / "eval", trained / "cache")
    with open(tmp_path / "eval" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == metrics["n_images"] == 12
    assert list(rows[0]) == [
        "file",
        "true_class",
        "predicted_class",
        "CNV",
        "DME",
        "DRUSEN",
        "NORMAL",
    ]
    for r in rows:
        probs = [float(r[c]) for c in CLASSES]
        assert abs(sum(probs) - 1) < 1e-4
        assert r["predicted_class"] == CLASSES[int(np.argmax(probs))]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    assert np.array(metrics["confusion_matrix"]).sum() == 12
    for name in ("confusion_matrix.png", "cam_grid.png"):
        with Image.open(tmp_path / "eval" / name) as im:
            assert im.format == "PNG" and im.width > 200


def test_evaluate_is_deterministic(trained, tiny_sample, tmp_path):
    for name in ("a", "b"):
        evaluate(trained / "model", tiny_sample, tmp_path / name, trained / "cache")
    a, b = ((tmp_path / n / "predictions.csv").read_bytes() for n in ("a", "b"))
    assert a == b


def test_cams_have_image_shape_and_vary(trained, tiny_sample):
    net, _ = load_model(trained / "model")
    sample = read_sample(tiny_sample)
    images = decoded_images(sample, 32, "resize", trained / "cache").read(np.arange(4))
    cams = class_activation_maps(net, images)
    assert cams.shape == (4, 4, 32, 32)
    assert np.isfinite(cams).all()
    assert all(cams[i, c].std() > 0 for i in range(4) for c in range(4))


def test_seed_net_cams(tiny_sample, tmp_path, tiny_config):
    config = replace(tiny_config, architecture="seed", image_size=40, epochs=1, val_fraction=0.0)
    train(tiny_sample, tmp_path / "m", config, tmp_path / "cache")
    net, _ = load_model(tmp_path / "m")
    images = decoded_images(read_sample(tiny_sample), 40, "resize", tmp_path / "cache")
    assert class_activation_maps(net, images.read(np.arange(2))).shape == (2, 4, 40, 40)


def test_classification_metrics_by_hand():
    true = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2, 2])
    m = classification_metrics(true, pred, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert m["accuracy"] == round(4 / 6, 5)
    assert m["per_class"]["b"] == {
        "precision": 0.66667,
        "recall": 0.66667,
        "f1": 0.66667,
        "support": 3,
    }
    assert m["macro_f1"] == round((2 / 3 + 2 / 3 + 2 / 3) / 3, 5)
