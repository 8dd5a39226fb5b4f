"""The ensemble model folder: loads as one model whose probabilities are the members' mean,
through evaluation, scoring and the TorchScript export; bad members are refused, named."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.formats import METRICS_JSON
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.ml.cache import decoded_images
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.data import read_sample
from oct_assets.ml.ensemble import ensemble_info
from oct_assets.ml.predict import evaluate, load_model
from oct_assets.ml.runtime import BatchReader, predict_logits
from oct_assets.ml.train import train
from oct_assets.serving.export import export_difference, export_torchscript
from oct_assets.serving.score import score_files


@pytest.fixture(scope="module")
def store(tiny_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A salted store with two members (seeds 0 and 1, the second with flip TTA) and one
    member of another input size."""
    data = tmp_path_factory.mktemp("store")
    base = TrainConfig(
        epochs=1, image_size=32, batch_size=8, width=8, blocks=3, decode_workers=1, threads=1
    )
    configs = {
        "m0": base,
        "m1": dataclasses.replace(base, seed=1, tta_flip=True),
        "wide": dataclasses.replace(base, image_size=40),
    }
    for name, config in configs.items():
        train(tiny_sample, data / "cv_model" / name, config, cache_dir=data / "cache")
    return data


def write_ensemble(data: Path, members: list[str], name: str = "e") -> Path:
    folder = data / "ensemble_model" / name
    folder.mkdir(parents=True, exist_ok=True)
    infos = [ModelInfo.read(data / "cv_model" / m) for m in members]
    ensemble_info([("cv_model", m) for m in members], infos, "tiny").write(folder)
    return folder


def probabilities(model_dir: Path, sample_dir: Path, cache: Path) -> torch.Tensor:
    net, info = load_model(model_dir)
    sample = read_sample(sample_dir)
    images = decoded_images(sample, info.input.size, info.input.fit, cache, 1)
    rows = np.arange(len(sample))
    tta = TrainConfig.from_saved(info.config).tta_flip
    logits = predict_logits(net, BatchReader(images, 1), rows, torch.device("cpu"), 8, tta)
    return torch.softmax(logits, 1)


def test_probabilities_are_the_members_mean(store: Path, tiny_sample: Path) -> None:
    ens = write_ensemble(store, ["m0", "m1"])
    cache = store / "cache"
    mean = (
        probabilities(store / "cv_model" / "m0", tiny_sample, cache)
        + probabilities(store / "cv_model" / "m1", tiny_sample, cache)
    ) / 2
    ours = probabilities(ens, tiny_sample, cache)
    assert torch.allclose(ours, mean, atol=1e-6), (ours - mean).abs().max()
    assert not torch.allclose(mean, probabilities(store / "cv_model" / "m0", tiny_sample, cache))


def test_evaluation_scoring_and_export_take_an_ensemble(
    store: Path, tiny_sample: Path, tmp_path: Path
) -> None:
    ens = write_ensemble(store, ["m0", "m1"])
    metrics = evaluate(ens, tiny_sample, tmp_path / "pred", cache_dir=store / "cache")
    single = evaluate(store / "cv_model" / "m0", tiny_sample, tmp_path / "one")
    assert set(metrics) == set(single) and metrics["n_images"] == 12
    assert set(json.loads((tmp_path / "pred" / METRICS_JSON).read_text())) == set(single)

    ts = tmp_path / "model.ts"
    export_torchscript(ens, ts)
    check = export_difference(ens, ts, tiny_sample)
    assert check["max_abs_diff"] < 1e-5 and check["same_classes"], check

    scans = [tiny_sample / f for f in read_sample(tiny_sample).files[:3]]
    [s0, *_] = score_files(ens, scans)
    assert s0.probabilities is not None and abs(sum(s0.probabilities) - 1) < 1e-5
    assert s0.cam is not None and s0.cam.shape == (32, 32)


def test_a_missing_member_is_refused_naming_it(store: Path, tmp_path: Path) -> None:
    shutil.copytree(store / "cv_model" / "m0", store / "cv_model" / "gone")
    ens = write_ensemble(store, ["m0", "gone"], name="missing")
    shutil.rmtree(store / "cv_model" / "gone")
    with pytest.raises(OctMLError, match=r"member .*cv_model/gone is missing"):
        load_model(ens)


def test_a_member_of_another_geometry_is_refused_naming_it(store: Path) -> None:
    folder = store / "ensemble_model" / "mixed"
    folder.mkdir(parents=True)
    infos = [ModelInfo.read(store / "cv_model" / m) for m in ("m0", "m0")]
    ensemble_info([("cv_model", "m0"), ("cv_model", "wide")], infos, "tiny").write(folder)
    with pytest.raises(OctMLError, match=r"member .*cv_model/wide has input size 40"):
        load_model(folder)
