"""The README's run command on the embedded default: synthetic data, said loudly, learnable."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster._utils.error import SerializableErrorInfo

from oct_assets.cli.run_log import root_cause


def test_python_m_oct_assets_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SYNTHETIC DATA" in proc.stderr
    accuracy = float(re.search(r"test accuracy: ([0-9.]+) on 40 images", proc.stdout).group(1))
    assert accuracy >= 0.9
    for name in ("raw_oct_images", "reduced_sample", "trained_model", "predictions"):
        folder = Path(re.search(rf"^{name}:\s+(\S+)$", proc.stdout, re.M).group(1))
        assert folder.parent == tmp_path / "data" / name
        assert (folder / "manifest.json").is_file()
    assert (tmp_path / "data" / "OCT2017" / "SYNTHETIC.txt").is_file()


def test_quick_start_output_is_one_line_per_step_with_the_log_in_a_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "data")
    config = tmp_path / "fast.yaml"
    config.write_text(
        '{"ops": {"reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},'
        ' "trained_model": {"config": {"epochs": 2, "image_size": 32}}}}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DEBUG" not in proc.stderr and len(proc.stderr.splitlines()) < 40, proc.stderr
    assert re.search(r"trained_model: epoch 2: loss", proc.stderr)
    assert re.search(r"predictions: done in", proc.stderr)
    log = Path(re.search(r"^full log: (\S+)$", proc.stdout, re.M).group(1))
    assert "STEP_START" in log.read_text() or "DEBUG" in log.read_text()
    assert "SYNTHETIC DATA" in proc.stdout and "test accuracy:" in proc.stdout


def test_an_empty_images_dir_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(OCT_DATA_DIR=str(tmp_path / "data"), OCT_IMAGES_DIR="")
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "OCT_IMAGES_DIR is set but empty" in proc.stderr
    assert not (tmp_path / "data" / "OCT2017").exists()


def test_absurd_settings_are_refused_at_launch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "data")
    config = tmp_path / "absurd.yaml"
    config.write_text("ops: {trained_model: {config: {weight_decay: 1e309}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "weight_decay" in proc.stderr
    assert "learning_rate" not in proc.stderr
    assert not (tmp_path / "data" / "raw_oct_images").exists()  # no step ran


BAD_CONFIGS = {
    "missing.yaml": (None, "cannot read it"),
    "broken.yaml": ("ops: [1", "not valid YAML"),
    "list.yaml": ("- 1\n", "got a YAML list"),
    "unknown.yaml": ("ops: {trained_model: {config: {epochz: 3}}}\n", '"epochz"'),
    "type.yaml": ('ops: {trained_model: {config: {epochs: "many"}}}\n', "epochs"),
    "shape.yaml": ("ops: {reduced_sample: 5}\n", "reduced_sample must be dict"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_bad_config_file_is_an_error_naming_it(tmp_path: Path, name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "data")
    text, expected = BAD_CONFIGS[name]
    config = tmp_path / name
    if text is not None:
        config.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert str(config) in proc.stderr and expected in proc.stderr, proc.stderr
    assert not (tmp_path / "data" / "raw_oct_images").exists()


def test_an_unwritable_data_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    """A data folder that cannot be created (here under a file; a read-only mount is alike)."""
    (tmp_path / "a_file").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("OCT_IMAGES_DIR", "DAGSTER_HOME")}
    env["OCT_DATA_DIR"] = str(tmp_path / "a_file" / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "oct_assets"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "OCT_DATA_DIR" in proc.stderr and str(tmp_path / "a_file" / "data") in proc.stderr


def test_two_first_runs_on_an_empty_data_folder_and_a_fresh_dagster_home(tmp_path: Path) -> None:
    """Both generate-or-wait for the demo set and create-or-wait for the instance's tables."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OCT_IMAGES_DIR"}
    env.update(OCT_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(home))
    config = tmp_path / "fast.yaml"
    config.write_text(
        '{"ops": {"reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},'
        ' "trained_model": {"config": {"epochs": 1, "image_size": 32}}}}'
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "oct_assets", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    first, second = (re.search(r"^trained_model:\s+(\S+)$", o, re.M).group(1) for o, _ in outs)
    assert first == second  # the same demo set, the same salts


def test_a_step_failure_line_names_the_innermost_cause() -> None:
    """ENOSPC deep in a step: the terminal line says "No space left on device", not Dagster's
    "Error occurred while executing op"."""
    inner = SerializableErrorInfo(
        "OSError: [Errno 28] No space left on device: '/data/trained_model/x'\n", [], "OSError"
    )
    outer = SerializableErrorInfo(
        'Error occurred while executing op "trained_model":\n', [], "DagsterError", inner
    )
    assert (
        root_cause(outer) == "OSError: [Errno 28] No space left on device: '/data/trained_model/x'"
    )
