"""Shared pytest fixtures; service and ML fixtures live in their own plugin modules."""

from pathlib import Path

import pytest

from oct_assets.dataset.synthetic import make_synthetic_oct2017

pytest_plugins = [
    "oct_assets_tests.fixtures_ml",
    "oct_assets_tests.services.postgres",
    "oct_assets_tests.services.sshd",  # before slurm, which imports it
    "oct_assets_tests.services.slurm",
]


@pytest.fixture(scope="session")
def tiny_tree_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic OCT2017 tree, generated once: copy it before changing it."""
    root = tmp_path_factory.mktemp("template") / "OCT2017"
    return make_synthetic_oct2017(root, train_patients=4, test_patients=2, images_per_patient=2)


@pytest.fixture
def data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh OCT_DATA_DIR for one test, with no explicit image root."""
    data = tmp_path / "data"
    monkeypatch.setenv("OCT_DATA_DIR", str(data))
    monkeypatch.delenv("OCT_IMAGES_DIR", raising=False)
    return data


@pytest.fixture
def tiny_tree(
    tiny_tree_template: Path, data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A private copy of the tiny tree, set as OCT_IMAGES_DIR (in a fresh OCT_DATA_DIR)."""
    import shutil

    root = tmp_path / "images" / "OCT2017"
    shutil.copytree(tiny_tree_template, root, copy_function=shutil.copy2)
    monkeypatch.setenv("OCT_IMAGES_DIR", str(root))
    return root
