"""The training loop: determinism, failure messages, both architectures and the CLI."""

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from oct_assets.contracts.errors import ImageDecodeError, OctMLError, SampleError
from oct_assets.contracts.model_info import TRAINING_ENV_HASH_VAR, ModelInfo
from oct_assets.ml.loop import training_environment
from oct_assets.ml.predict import evaluate
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import REPO

TIMING = {"seconds", "images_per_second"}


@pytest.mark.parametrize(
    "options",
    [
        {"cpu_bf16": False},
        {"cpu_bf16": True},
        {"architecture": "plain", "crop_size": 28, "augment": "light", "cpu_bf16": True},
    ],
)
def test_same_config_gives_identical_bytes(tiny_sample, tiny_config, tmp_path, options):
    tiny_config = replace(tiny_config, **options)
    metrics = [
        train(tiny_sample, tmp_path / name, tiny_config, cache_dir=tmp_path / "cache")
        for name in ("a", "b")
    ]
    a, b = ((tmp_path / n / "model.pt").read_bytes() for n in ("a", "b"))
    assert a == b

    def untimed(m):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in m["history"]]

    assert untimed(metrics[0]) == untimed(metrics[1])


def test_cpu_bf16_is_used(tiny_sample, tiny_config, tmp_path):
    for name, bf16 in (("fp32", False), ("bf16", True)):
        train(tiny_sample, tmp_path / name, replace(tiny_config, cpu_bf16=bf16), tmp_path / "c")
    assert (tmp_path / "fp32/model.pt").read_bytes() != (tmp_path / "bf16/model.pt").read_bytes()


def test_other_seed_changes_weights(tiny_sample, tiny_config, tmp_path):
    train(tiny_sample, tmp_path / "a", tiny_config, cache_dir=tmp_path / "cache")
    train(tiny_sample, tmp_path / "b", replace(tiny_config, seed=1), cache_dir=tmp_path / "cache")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_model_json_and_epoch_callback(tiny_sample, tiny_config, tmp_path):
    seen = []
    metrics = train(tiny_sample, tmp_path / "m", tiny_config, tmp_path / "cache", seen.append)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [r["epoch"] for r in seen] == [1, 2]
    assert meta["classes"] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert meta["input"] == {"size": 32, "channels": 1, "fit": "resize"}
    assert meta["config"] == tiny_config.to_dict()
    assert meta["device"] == "cpu" and meta["torch_version"] == torch.__version__
    assert meta["epochs_run"] == 2 and 1 <= meta["best_epoch"] <= 2
    assert metrics["images_per_second"] > 0 and metrics["n_val"] > 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.pt"]


def test_model_json_round_trips_through_model_info(tiny_sample, tiny_config, tmp_path, monkeypatch):
    """Every key the trainer writes is a `ModelInfo` field, in order; the environment is
    recorded only when the launcher names it."""
    monkeypatch.delenv(TRAINING_ENV_HASH_VAR, raising=False)
    assert training_environment() is None
    monkeypatch.setenv(TRAINING_ENV_HASH_VAR, "env-abc")
    train(tiny_sample, tmp_path / "m", tiny_config, tmp_path / "cache")
    text = (tmp_path / "m" / "model.json").read_text()
    info = ModelInfo.read(tmp_path / "m")
    assert info.to_text() == text
    assert list(json.loads(text))[-1] == "environment"
    assert info.environment == {
        "hash": "env-abc",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def test_learns_the_tiny_task(tiny_sample, tiny_config, tmp_path):
    config = replace(tiny_config, epochs=12, learning_rate=1e-2, val_fraction=0.0)
    train(tiny_sample, tmp_path / "m", config, tmp_path / "cache")
    held_out = evaluate(tmp_path / "m", tiny_sample, tmp_path / "eval", tmp_path / "cache")
    assert held_out["accuracy"] >= 0.9


def test_empty_class_is_named(make_sample, tiny_config, tmp_path):
    root = make_sample(empty_train_class="NORMAL")
    with pytest.raises(SampleError, match="'NORMAL' has no images in the train split"):
        train(root, tmp_path / "m", tiny_config, tmp_path / "cache")


def test_corrupt_image_is_named(make_sample, tiny_config, tmp_path):
    root = make_sample()
    victim = next((root / "test" / "CNV").iterdir())
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ImageDecodeError, match=str(victim)):
        train(root, tmp_path / "m", tiny_config, tmp_path / "cache")


@pytest.mark.parametrize(("arch", "size", "minimum"), [("compact", 4, 8), ("seed", 16, 24)])
def test_too_small_image_size_names_setting_and_minimum(
    tiny_sample, tiny_config, tmp_path, arch, size, minimum
):
    config = replace(tiny_config, architecture=arch, image_size=size)
    with pytest.raises(OctMLError, match=f"image_size={size}.*minimum is {minimum}"):
        train(tiny_sample, tmp_path / "m", config, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # failed before decoding anything


def test_seed_architecture(tiny_sample, tiny_config, tmp_path):
    config = replace(
        tiny_config,
        architecture="seed",
        image_size=32,
        epochs=1,
        batch_size=16,
        val_fraction=0.0,
    )
    metrics = train(tiny_sample, tmp_path / "m", config, tmp_path / "cache")
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert state["body.0.weight"].shape == (64, 3, 3, 3)
    assert metrics["epochs_run"] == 1 and metrics["train_loss"] > 0


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "oct_assets.ml.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_cli_end_to_end(tiny_sample, tiny_config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config.to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    proc = _cli(
        "--sample",
        tiny_sample,
        "--out",
        tmp_path / "m",
        "--config",
        tmp_path / "config.json",
        "--cache-dir",
        tmp_path / "cache",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"epoch": 2' in proc.stderr  # per-epoch progress is logged
    assert json.loads((tmp_path / "m" / "model.json").read_text())["epochs_run"] == 2


def test_cli_bad_config_is_one_line_error(tiny_sample, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 1, "colour": "red"}))
    proc = _cli(
        "--sample", tiny_sample, "--out", tmp_path / "m", "--config", tmp_path / "config.json"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: unknown TrainConfig key(s): colour"


@pytest.mark.parametrize(
    "options",
    [
        {"fit": "band"},
        {"fit": "crop", "pool_power": 4.0},
        {"blocks": 2, "augment": "none"},
        {"crop_size": 24, "augment": "light", "warmup": 0.3},
        {"architecture": "plain", "crop_size": 28, "augment": "light"},
    ],
)
def test_options_train(tiny_sample, tiny_config, tmp_path, options):
    metrics = train(tiny_sample, tmp_path / "m", replace(tiny_config, **options), tmp_path / "c")
    assert metrics["epochs_run"] == 2 and np.isfinite(metrics["train_loss"])


def test_thread_count_is_restored(tiny_sample, tiny_config, tmp_path):
    before = torch.get_num_threads()
    train(tiny_sample, tmp_path / "m", replace(tiny_config, threads=1), tmp_path / "c")
    assert torch.get_num_threads() == before


def test_balanced_priors_divides_the_probabilities_by_the_training_class_shares(
    make_sample, tiny_config, tmp_path
):
    """Logit adjustment lives in the weights: the same training, and only the classifier's
    bias moved by -log(share), so every reader's probabilities are p / share, renormalised."""
    import csv

    from oct_assets_tests.fixtures_ml import write_index

    sample = make_sample(train_per_class=12)
    with open(sample / "images.csv") as f:
        rows = [tuple(r.values()) for r in csv.DictReader(f)]
    drusen = [r for r in rows if r[1] == "train" and r[2] == "DRUSEN"]
    write_index(sample, [r for r in rows if r not in drusen[4:]], "unbalanced")  # 12/12/4/12
    config = replace(tiny_config, val_fraction=0.0)
    for name, on in (("plain", False), ("balanced", True)):
        train(sample, tmp_path / name, replace(config, balanced_priors=on), tmp_path / "c")
    plain, balanced = (
        torch.load(tmp_path / n / "model.pt", weights_only=True) for n in ("plain", "balanced")
    )
    shares = np.array([12, 12, 4, 12]) / 40
    assert ModelInfo.read(tmp_path / "balanced").metrics["train_class_shares"] == list(shares)
    for k in plain:
        if k != "classifier.bias":
            assert torch.equal(plain[k], balanced[k]), k
    moved = (balanced["classifier.bias"] - plain["classifier.bias"]).numpy()
    np.testing.assert_allclose(moved, -np.log(shares), rtol=1e-6)

    probs = {}
    for name in ("plain", "balanced"):
        evaluate(tmp_path / name, sample, tmp_path / f"{name}-pred", cache_dir=tmp_path / "c")
        with open(tmp_path / f"{name}-pred" / "predictions.csv") as f:
            probs[name] = np.array(
                [
                    [float(r[c]) for c in ("CNV", "DME", "DRUSEN", "NORMAL")]
                    for r in csv.DictReader(f)
                ]
            )
    expected = probs["plain"] / shares
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs["balanced"], expected, atol=1e-4)  # CSV: 6 decimals


def test_balanced_priors_refuses_a_class_missing_from_the_trained_scans() -> None:
    from oct_assets.ml.loop import balanced_bias

    with pytest.raises(OctMLError, match="balanced_priors"):
        balanced_bias(torch.zeros(4), np.array([0.5, 0.5, 0.0, 0.0]))
