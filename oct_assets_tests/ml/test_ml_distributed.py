"""Data-parallel training: `torchrun` with two CPU ranks (gloo) against one process."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from oct_assets.contracts.errors import OctMLError
from oct_assets.ml.cache import cache_key
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.distributed import Placement
from oct_assets.ml.loop import epoch_batches
from oct_assets.ml.predict import evaluate, load_model
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import REPO, write_sample

CONFIG = TrainConfig(
    epochs=12,
    image_size=32,
    batch_size=16,
    learning_rate=1e-2,
    val_fraction=0.15,  # rank 0 validates and decides early stops for every rank
    patience=2,
    width=8,
    blocks=3,
    decode_workers=1,
    threads=1,
)


def torchrun(sample: Path, out: Path, config: TrainConfig, cache: Path) -> None:
    config_file = out.parent / f"{out.name}.config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    args = ["--sample", sample, "--out", out, "--config", config_file, "--cache-dir", cache]
    proc = subprocess.run(
        [*launcher, "2", "-m", "oct_assets.ml.train", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 train and 16 test images per class: enough test images to compare accuracies."""
    work = tmp_path_factory.mktemp("ddp")
    write_sample(work / "sample", train_per_class=32, test_per_class=16, salt="ddp-demo")
    torchrun(work / "sample", work / "ranks2", CONFIG, work / "cache")
    return work


def test_two_ranks_train_a_model_like_one_process(demo, tmp_path):
    train(demo / "sample", tmp_path / "alone", CONFIG, demo / "cache")
    # Rank 0 alone writes: nothing from rank 1 beside the model, one cache file, no leftovers.
    assert sorted(p.name for p in (demo / "ranks2").iterdir()) == ["model.json", "model.pt"]
    assert sorted(p.name for p in (demo / "cache").iterdir()) == [
        f"{cache_key('ddp-demo', 32, 'resize')}.json",
        f"{cache_key('ddp-demo', 32, 'resize')}.u8",
    ]
    _, info = load_model(demo / "ranks2")
    assert info.world_size == 2 and info.device == "cpu" and info.gpu_name is None
    assert info.amp is False and info.images_per_second > 0
    history = info.metrics["history"]
    assert len(history) == info.epochs_run and info.metrics["val_accuracy"] is not None
    assert info.metrics["n_fit"] + info.metrics["n_val"] == 128
    sample, cache = demo / "sample", demo / "cache"
    alone = evaluate(tmp_path / "alone", sample, tmp_path / "eval-alone", cache)["accuracy"]
    ranks2 = evaluate(demo / "ranks2", sample, tmp_path / "eval-ranks2", cache)["accuracy"]
    print(f"test accuracy: one process {alone:.3f}, two ranks {ranks2:.3f}")
    assert alone >= 0.9 and abs(ranks2 - alone) <= 0.05, (alone, ranks2)  # 64 test images


def test_two_ranks_repeat_bit_identically(demo):
    torchrun(demo / "sample", demo / "again", CONFIG, demo / "cache")
    assert (demo / "again" / "model.pt").read_bytes() == (demo / "ranks2" / "model.pt").read_bytes()


def test_batch_size_must_divide_among_ranks(tiny_sample, tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": 3, "RANK": 0, "LOCAL_RANK": 0}.items():
        monkeypatch.setenv(name, str(value))
    with pytest.raises(OctMLError, match=r"TrainConfig.batch_size=16 .* world size 3"):
        train(tiny_sample, tmp_path / "m", replace(CONFIG, batch_size=16), tmp_path / "cache")
    assert not (tmp_path / "m").exists() and not (tmp_path / "cache").exists()


def test_ranks_share_each_global_batch():
    rows = np.arange(100, 150)
    cuts = {}
    for world in (1, 2, 5):
        per_rank = [
            epoch_batches(rows, np.random.default_rng(7), 10, Placement(r, r, world, world, None))
            for r in range(world)
        ]
        # Every step, the ranks' shares make up the one-process batch, disjoint, equal-sized.
        cuts[world] = [np.sort(np.concatenate(step)) for step in zip(*per_rank, strict=True)]
        assert all(len(b) == 10 // world for shares in per_rank for b in shares)
    assert all(np.array_equal(a, b) for a, b in zip(cuts[1], cuts[2], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(cuts[1], cuts[5], strict=True))
