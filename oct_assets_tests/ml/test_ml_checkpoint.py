"""Checkpoints: a run stopped at any step and resumed writes the uninterrupted run's model.pt
byte for byte; a checkpoint of another run is refused, naming the file and what differs."""

import hashlib
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from oct_assets.ml import loop
from oct_assets.ml.checkpoint import CHECKPOINT_PT, CheckpointMismatchError, TrainingStopped
from oct_assets.ml.train import train

TIMING = {"seconds", "images_per_second"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def stop_at(monkeypatch: pytest.MonkeyPatch, steps: set[int], signum: int) -> None:
    """Send `signum` to this process during the given training steps (counted from 1 over
    the whole run): the loop must stop before the next step and checkpoint."""
    real, calls = loop.training_batch, [0]

    def signalling(*args, **kwargs):
        calls[0] += 1
        if calls[0] in steps:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "training_batch", signalling)


@pytest.fixture
def config(tiny_config):
    """4 epochs of 3 steps (24 fit images, batches of 8); validation picks the best epoch."""
    return replace(tiny_config, epochs=4, patience=0)


@pytest.mark.parametrize(
    ("options", "stops"),
    [
        ({}, {2}),  # mid-epoch 1
        ({}, {3, 7}),  # at the end of epoch 1 (stops at epoch 2 step 0), then mid-epoch 3
        ({"val_fraction": 0.0, "cpu_bf16": True}, {5}),  # the last epoch is kept
    ],
)
def test_stopped_and_resumed_is_byte_identical(
    tiny_sample, config, tmp_path, monkeypatch, options, stops
):
    config = replace(config, **options)
    straight = train(tiny_sample, tmp_path / "straight", config, tmp_path / "cache")
    ckpt = tmp_path / "ckpt"
    stop_at(monkeypatch, stops, signal.SIGTERM)
    expected_stops = sorted(stops)
    for _ in expected_stops:
        with pytest.raises(TrainingStopped, match=f"stopped by SIGTERM .* resume from {ckpt}"):
            train(tiny_sample, tmp_path / "resumed", config, tmp_path / "cache", None, ckpt)
        assert (ckpt / CHECKPOINT_PT).is_file() and not (tmp_path / "resumed").exists()
        assert sorted(p.name for p in ckpt.iterdir()) == [CHECKPOINT_PT]  # no temp files left
    resumed = train(tiny_sample, tmp_path / "resumed", config, tmp_path / "cache", None, ckpt)
    assert sha(tmp_path / "resumed" / "model.pt") == sha(tmp_path / "straight" / "model.pt")
    assert untimed(resumed["history"]) == untimed(straight["history"])
    # Signalled during the n-th step: the run stops before step index n (counted from 0).
    epoch, step = divmod(expected_stops[-1], straight["n_fit"] // config.batch_size)
    assert (resumed["resumed_from_epoch"], resumed["resumed_from_step"]) == (epoch + 1, step)
    assert straight["resumed_from_epoch"] is None and straight["checkpoint_seconds"] == 0
    assert resumed["best_epoch"] == straight["best_epoch"]


def test_sigusr2_stops_too_and_epoch_end_checkpoints_resume(
    tiny_sample, config, tmp_path, monkeypatch
):
    ckpt = tmp_path / "ckpt"
    stop_at(monkeypatch, {4}, signal.SIGUSR2)
    with pytest.raises(TrainingStopped, match="SIGUSR2 in epoch 2 at step 1") as stopped:
        train(tiny_sample, tmp_path / "m", config, tmp_path / "cache", None, ckpt)
    assert stopped.value.signum == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers restored


def test_finished_run_resumes_to_its_model(tiny_sample, config, tmp_path):
    """Killed after the last epoch's checkpoint but before model.pt: nothing is trained again."""
    ckpt = tmp_path / "ckpt"
    first = train(tiny_sample, tmp_path / "a", config, tmp_path / "cache", None, ckpt)
    again = train(tiny_sample, tmp_path / "b", config, tmp_path / "cache", None, ckpt)
    assert sha(tmp_path / "a" / "model.pt") == sha(tmp_path / "b" / "model.pt")
    assert again["resumed_from_epoch"] == config.epochs + 1 and again["train_seconds"] > 0
    assert untimed(again["history"]) == untimed(first["history"])
    assert first["checkpoint_seconds"] > 0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "config.seed: 0 there, 1 now"),
        ({"epochs": 5}, "config.epochs: 4 there, 5 now"),
        ({"sample_salt": "other"}, "sample_salt: 'tiny' there, 'other' now"),
        ({"WORLD_SIZE": "2"}, "world_size: 1 there, 2 now"),
    ],
)
def test_checkpoint_of_another_run_is_refused_by_name(
    tiny_sample, make_sample, config, tmp_path, monkeypatch, change, named
):
    ckpt = tmp_path / "ckpt"
    stop_at(monkeypatch, {2}, signal.SIGTERM)
    with pytest.raises(TrainingStopped):
        train(tiny_sample, tmp_path / "m", config, tmp_path / "cache", None, ckpt)
    before = sha(ckpt / CHECKPOINT_PT)
    sample = tiny_sample
    if "sample_salt" in change:
        sample = make_sample("other", salt=change.pop("sample_salt"))
    if "WORLD_SIZE" in change:  # refused before any process group is set up
        monkeypatch.setenv("WORLD_SIZE", change.pop("WORLD_SIZE"))
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(CheckpointMismatchError, match=f"{ckpt / CHECKPOINT_PT}.*{named}"):
        train(sample, tmp_path / "m", replace(config, **change), tmp_path / "c", None, ckpt)
    assert sha(ckpt / CHECKPOINT_PT) == before and not (tmp_path / "m").exists()


def test_without_a_checkpoint_dir_signals_keep_their_default(tiny_sample, config, tmp_path):
    seen = []
    train(
        tiny_sample,
        tmp_path / "m",
        replace(config, epochs=1),
        tmp_path / "cache",
        lambda _: seen.append(signal.getsignal(signal.SIGTERM)),
    )
    assert seen == [signal.SIG_DFL]
