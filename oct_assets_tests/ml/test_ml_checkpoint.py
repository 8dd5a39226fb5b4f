"""Checkpoints: a run stopped at any step and resumed writes the uninterrupted run's model.pt
byte for byte; a checkpoint of another run is refused, naming the file and what differs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from oct_assets.contracts.errors import DamagedFileError
from oct_assets.ml import loop
from oct_assets.ml.checkpoint import CHECKPOINT_PT, CheckpointMismatchError, TrainingStopped
from oct_assets.ml.train import train
from oct_assets_tests.fixtures_ml import REPO

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


def test_stop_asked_after_the_last_epoch_finishes_the_model_and_exits_0(
    tiny_sample, config, tmp_path, monkeypatch
):
    """A time-limit warning that comes while the model is written (the last epoch checkpointed)
    has nothing left to save: the trainer writes its model and exits 0, so its Slurm job is not
    requeued to redo nothing (seen on CI: one restart more, resuming at epoch epochs + 1)."""
    from oct_assets.ml import train as train_cli
    from oct_assets.ml.checkpoint import STOP_SIGNALS

    straight = train(tiny_sample, tmp_path / "straight", config, tmp_path / "cache")
    real_save = loop._save_state_dict

    def save_when_told_to_stop(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # noted, not fatal: the model is being written
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "_save_state_dict", save_when_told_to_stop)
    monkeypatch.setattr(train_cli, "die_with_parent", lambda: None)  # this is pytest's process
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = ["--sample", tiny_sample, "--out", tmp_path / "m", "--config", tmp_path / "config.json"]
    args += ["--cache-dir", tmp_path / "cache", "--checkpoint-dir", tmp_path / "ckpt"]
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    outside: list[int] = []  # a signal the trainer did not handle lands here, not in a kill
    signal.signal(signal.SIGTERM, lambda signum, _frame: outside.append(signum))
    try:
        assert train_cli.main([str(a) for a in args]) == 0
        assert outside == []  # it came while the trainer still noted stop signals
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGTERM)  # still finishing (Pipes, exit): ignored too
        assert outside == []
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert sha(tmp_path / "m" / "model.pt") == sha(tmp_path / "straight" / "model.pt")
    assert straight["epochs_run"] == config.epochs


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


def test_without_a_checkpoint_dir_signals_keep_their_handlers(tiny_sample, config, tmp_path):
    """Without --checkpoint-dir the trainer installs no handler: SIGTERM keeps whatever its host
    process set (SIG_DFL in a fresh trainer, Dagster's interrupt handler inside a pytest run)."""
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    train(
        tiny_sample,
        tmp_path / "m",
        replace(config, epochs=1),
        tmp_path / "cache",
        lambda _: seen.append(signal.getsignal(signal.SIGTERM)),
    )
    assert seen == [before]


def test_two_ranks_stopped_and_resumed_is_byte_identical(tiny_sample, tiny_config, tmp_path):
    """torchrun (2 gloo ranks) told to stop by SIGTERM mid-run, then started again, writes the
    uninterrupted two-rank run's model.pt; each rank gets its own RNG states back."""
    config = replace(tiny_config, epochs=40)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    ckpt = tmp_path / "ckpt"

    def torchrun(out: str, *extra) -> subprocess.Popen:
        args = ["--sample", tiny_sample, "--out", tmp_path / out, "--config"]
        args += [tmp_path / "config.json", "--cache-dir", tmp_path / "cache", *extra]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        return subprocess.Popen(
            [*launcher, "--nproc_per_node", "2", "-m", "oct_assets.ml.train", *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    straight = torchrun("straight")
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    stopped = torchrun("resumed", "--checkpoint-dir", ckpt)
    try:
        deadline, first = time.time() + 120, None
        while True:  # until a second epoch-end checkpoint has replaced the first
            assert time.time() < deadline and stopped.poll() is None, stopped.stdout.read()
            try:
                inode = (ckpt / CHECKPOINT_PT).stat().st_ino
            except FileNotFoundError:
                inode = None
            if first is None:
                first = inode
            elif inode not in (None, first):
                break
            time.sleep(0.02)
        stopped.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
        output = stopped.communicate(timeout=120)[0]
    finally:
        if stopped.poll() is None:
            stopped.kill()
    assert stopped.returncode != 0 and "stopped by SIGTERM" in output, output
    print(*(line for line in output.splitlines() if "stopped by" in line), sep="\n")
    assert not (tmp_path / "resumed").exists()
    resumed = torchrun("resumed", "--checkpoint-dir", ckpt)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert sha(tmp_path / "resumed" / "model.pt") == sha(tmp_path / "straight" / "model.pt")
    meta = json.loads((tmp_path / "resumed" / "model.json").read_text())
    assert meta["world_size"] == 2 and meta["metrics"]["resumed_from_epoch"] >= 3


def test_damaged_checkpoint_is_named_and_a_dead_write_is_cleared(tiny_sample, config, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    dead = ckpt / f".{CHECKPOINT_PT}.12345.deadbeef.tmp"  # a write killed midway
    dead.write_bytes(b"half")
    (ckpt / CHECKPOINT_PT).write_bytes(b"not a checkpoint")
    with pytest.raises(DamagedFileError, match=f"checkpoint {ckpt / CHECKPOINT_PT} is damaged"):
        train(tiny_sample, tmp_path / "m", config, tmp_path / "cache", None, ckpt)
    assert not dead.exists() and not (tmp_path / "m").exists()
