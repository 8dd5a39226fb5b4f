"""Every asset check passes on a sound graph and fails, naming the problem, on a broken one."""

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.dataset.scan import ImageRecord
from oct_assets.definitions import local_checks
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.dataset.test_validity import _png_header_only
from oct_assets_tests.resources import LOCAL_RESOURCES

RESOURCES = {**LOCAL_RESOURCES, "io_manager": LatestArtifactIOManager()}
FAST = {
    "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
    "trained_model": {"config": {"epochs": 2, "image_size": 32, "batch_size": 16}},
}
ALL_CHECKS = sorted(k.to_user_string() for c in local_checks for k in c.check_keys)


def check_key(name: str) -> AssetCheckKey:
    asset, check = name.split(":")
    return AssetCheckKey(AssetKey(asset), check)


def evaluations(result: ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def run(selection, ops: dict | None = None, **kwargs) -> ExecuteInProcessResult:
    return materialize(
        [*LOCAL_GRAPH, *local_checks],
        selection=selection,
        resources=RESOURCES,
        run_config={"ops": ops or {}},
        raise_on_error=False,
        **kwargs,
    )


def run_check(name: str, ops: dict | None = None) -> AssetCheckEvaluation:
    """Run one check alone against the asset's latest output, as the UI's "Execute" does."""
    result = run(AssetSelection.checks(check_key(name)), ops)
    assert result.success, result.all_events
    return evaluations(result)[name]


@dataclass
class Built:
    data: Path
    images: Path
    result: ExecuteInProcessResult


@pytest.fixture(scope="module")
def built(tiny_tree_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The whole local graph with every check, built once for this module."""
    tmp = tmp_path_factory.mktemp("checks")
    images = tmp / "images" / "OCT2017"
    shutil.copytree(tiny_tree_template, images, copy_function=shutil.copy2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OCT_DATA_DIR", str(tmp / "data"))
        mp.setenv("OCT_IMAGES_DIR", str(images))
        ops = {**FAST, "predictions_accuracy_above_floor": {"config": {"floor": 0.0}}}
        result = run(AssetSelection.all(), ops, instance=DagsterInstance.ephemeral())
        assert result.success
        yield Built(tmp / "data", images, result)


@contextlib.contextmanager
def tampered(built: Built, asset: str) -> Iterator[Path]:
    """A copy of `asset`'s latest folder, made its latest output for the duration."""
    pointer = built.data / asset / "latest.json"
    original = pointer.read_text()
    source = built.data / asset / json.loads(original)["salt"]
    copy = source.with_name(f"{source.name}-tampered")
    shutil.copytree(source, copy)
    pointer.write_text(json.dumps({"asset": asset, "salt": copy.name}))
    try:
        yield copy
    finally:
        pointer.write_text(original)
        shutil.rmtree(copy)


@pytest.mark.parametrize("name", ALL_CHECKS)
def test_check_passes_on_a_sound_graph(built: Built, name: str) -> None:
    evaluation = evaluations(built.result)[name]
    assert evaluation.passed, evaluation.description


def test_every_check_is_wired_in() -> None:
    assert ALL_CHECKS == [
        "predictions:accuracy_above_floor",
        "predictions:one_row_per_test_image",
        "predictions:probabilities_sum_to_one",
        "raw_oct_images:class_balance",
        "raw_oct_images:class_folders_known",
        "raw_oct_images:file_names_follow_pattern",
        "raw_oct_images:images_readable",
        "reduced_sample:every_class_in_both_splits",
        "reduced_sample:no_patient_in_both_splits",
        "trained_model:model_classes_and_input_size",
        "trained_model:model_loads",
    ]


# ---------------------------------------------------------------------------- raw_oct_images


def with_checks(*assets: str) -> AssetSelection:
    return AssetSelection.assets(*assets) | AssetSelection.checks_for_assets(*assets)


def raw_checks(tiny_tree: Path) -> dict[str, AssetCheckEvaluation]:
    result = run(with_checks("raw_oct_images"))
    assert result.success
    return evaluations(result)


def test_images_readable_names_corrupt_images(tiny_tree: Path, data_env: Path) -> None:
    images = sorted((tiny_tree / "train" / "DME").iterdir())
    images[0].write_bytes(images[0].read_bytes()[:600])
    images[1].write_bytes(b"")
    images[2].write_text("this is not a JPEG")
    images[3].write_bytes(_png_header_only(30000, 30000))  # a decompression bomb
    evaluation = raw_checks(tiny_tree)["raw_oct_images:images_readable"]
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    listed = evaluation.metadata["unreadable_files"].value
    assert f"{images[0]}: no JPEG end-of-image marker" in listed
    assert f"{images[1]}: empty file" in listed
    assert f"{images[2]}: not an image" in listed
    assert f"{images[3]}: decompression bomb" in listed
    assert evaluation.metadata["unreadable"].value == 4


def test_class_folders_known_names_a_new_folder(tiny_tree: Path, data_env: Path) -> None:
    assert raw_checks(tiny_tree)["raw_oct_images:class_folders_known"].passed
    (tiny_tree / "test" / "GLAUCOMA").mkdir()  # after the scan, which would refuse it
    evaluation = run_check("raw_oct_images:class_folders_known")
    assert not evaluation.passed
    assert str(tiny_tree / "test" / "GLAUCOMA") in evaluation.description


def test_file_names_follow_pattern_lists_stray_files(tiny_tree: Path, data_env: Path) -> None:
    sample = sorted((tiny_tree / "train" / "CNV").iterdir())[0]
    shutil.copy(sample, tiny_tree / "train" / "CNV" / "scan_0001.jpeg")
    shutil.copy(sample, tiny_tree / "train" / "CNV" / "DME-1234-1.jpeg")
    evaluation = raw_checks(tiny_tree)["raw_oct_images:file_names_follow_pattern"]
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    listed = evaluation.metadata["left_out"].value
    assert "train/CNV/scan_0001.jpeg" in listed and "train/CNV/DME-1234-1.jpeg" in listed


def test_class_balance_warns_on_a_skewed_split(tiny_tree: Path, data_env: Path) -> None:
    sample = sorted((tiny_tree / "train" / "CNV").iterdir())[0]
    for i in range(100):  # CNV: 108 train images, every other class 8
        shutil.copy(sample, tiny_tree / "train" / "CNV" / f"CNV-{8_000_000 + i}-1.jpeg")
    evaluation = raw_checks(tiny_tree)["raw_oct_images:class_balance"]
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.WARN
    assert "train: smallest class has 7.4% of the largest's images" in evaluation.description
    assert evaluation.metadata["ratio_test"].value == 1.0


# ---------------------------------------------------------------------------- reduced_sample


def take_everything(records, *_args) -> list[ImageRecord]:
    """A sampler that forgets about patients: the bug the blocking check guards against."""
    return sorted(records, key=lambda r: r.path)


def test_leaked_patient_blocks_training(
    tiny_tree: Path, data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_image = sorted((tiny_tree / "train" / "NORMAL").iterdir())[0]
    patient = train_image.name.split("-")[1]
    shutil.copy(train_image, tiny_tree / "test" / "NORMAL" / f"NORMAL-{patient}-99.jpeg")
    monkeypatch.setattr("oct_assets.dataset.sampling.draw_sample", take_everything)
    result = run(with_checks("raw_oct_images", "reduced_sample", "trained_model"), FAST)
    evaluation = evaluations(result)["reduced_sample:no_patient_in_both_splits"]
    assert not evaluation.passed and evaluation.blocking
    assert patient in evaluation.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "reduced_sample" in materialized and "trained_model" not in materialized
    assert not (data_env / "trained_model").exists()


def test_every_class_in_both_splits_names_the_missing_class(
    tiny_tree: Path, data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_test_drusen(records, *_args) -> list[ImageRecord]:
        return [r for r in take_everything(records) if (r.split, r.label) != ("test", "DRUSEN")]

    monkeypatch.setattr("oct_assets.dataset.sampling.draw_sample", no_test_drusen)
    result = run(
        AssetSelection.assets("raw_oct_images", "reduced_sample")
        | AssetSelection.checks(check_key("reduced_sample:every_class_in_both_splits"))
    )
    evaluation = evaluations(result)["reduced_sample:every_class_in_both_splits"]
    assert not evaluation.passed and "test/DRUSEN" in evaluation.description


# ---------------------------------------------------------------------------- trained_model


def test_model_loads_fails_on_corrupt_weights(built: Built) -> None:
    with tampered(built, "trained_model") as folder:
        (folder / "model.pt").write_bytes(b"not a state dict")
        evaluation = run_check("trained_model:model_loads")
    assert not evaluation.passed and "does not load" in evaluation.description


def test_model_loads_fails_on_nan_weights(built: Built) -> None:
    """What `learning_rate: 1e30` trains: a model that loads and answers NaN."""
    import torch

    with tampered(built, "trained_model") as folder:
        state = torch.load(folder / "model.pt", weights_only=True)
        nan = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in state.items()
        }
        torch.save(nan, folder / "model.pt")
        evaluation = run_check("trained_model:model_loads")
    assert not evaluation.passed and "NaN or infinite" in evaluation.description


def test_model_loads_fails_when_weights_miss_a_class(built: Built) -> None:
    with tampered(built, "trained_model") as folder:
        meta = json.loads((folder / "model.json").read_text())
        meta["classes"] = meta["classes"][:3]  # the head still has 4 outputs
        (folder / "model.json").write_text(json.dumps(meta))
        evaluation = run_check("trained_model:model_loads")
    assert not evaluation.passed and "size mismatch" in evaluation.description


def test_model_classes_and_input_size_fail_when_they_differ(built: Built) -> None:
    with tampered(built, "trained_model") as folder:
        meta = json.loads((folder / "model.json").read_text())
        meta["classes"] = list(reversed(meta["classes"]))
        meta["input"]["size"] = 64  # configured with 32
        (folder / "model.json").write_text(json.dumps(meta))
        evaluation = run_check("trained_model:model_classes_and_input_size")
    assert not evaluation.passed
    assert "classes ['NORMAL', 'DRUSEN', 'DME', 'CNV']" in evaluation.description
    assert "input size 64, but the asset was configured with 32" in evaluation.description


@contextlib.contextmanager
def as_cluster_model(built: Built, config: dict) -> Iterator[Path]:
    """The latest `trained_model` folder, copied in as the latest `cluster_model` with the
    manifest `cluster_model` writes for `config` (nothing else of it differs for the check)."""
    source = (
        built.data
        / "trained_model"
        / json.loads((built.data / "trained_model" / "latest.json").read_text())["salt"]
    )
    folder = built.data / "cluster_model" / "0000000000000000"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(asset="cluster_model", salt=folder.name, config=config)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder.parent / "latest.json").write_text(
        json.dumps({"asset": "cluster_model", "salt": folder.name})
    )
    try:
        yield folder
    finally:
        shutil.rmtree(folder.parent)


def run_cluster_model_check(name: str) -> AssetCheckEvaluation:
    from oct_assets.assets.cluster import cluster_model
    from oct_assets.definitions import cluster_checks, defs

    checks = [
        c for c in cluster_checks if {k.asset_key for k in c.check_keys} == {cluster_model.key}
    ]
    result = materialize(
        [cluster_model, *checks],
        selection=AssetSelection.checks(check_key(name)),
        resources={**RESOURCES, "cluster": defs.resources["cluster"]},
        raise_on_error=False,
    )
    assert result.success, result.all_events
    return evaluations(result)[name]


@pytest.mark.parametrize(
    "config",
    [
        {"mode": "train", "training": {**FAST["trained_model"]["config"], "seed": 0}},
        {"mode": "fetch", "remote_model_path": "/cluster/models/latest"},
    ],
    ids=["train", "fetch"],
)
def test_model_classes_and_input_size_checks_the_size_of_cluster_model(
    built: Built, config: dict
) -> None:
    """`cluster_model` nests its training config under `training` (mode train), or has none of
    its own (mode fetch: the size its model.json was trained at): the input size is compared
    either way, never skipped."""
    name = "cluster_model:model_classes_and_input_size"
    with as_cluster_model(built, config) as folder:
        sound = run_cluster_model_check(name)
        meta = json.loads((folder / "model.json").read_text())
        meta["input"]["size"] = 64  # trained and configured with 32
        (folder / "model.json").write_text(json.dumps(meta))
        wrong = run_cluster_model_check(name)
    assert sound.passed and sound.metadata["configured_input_size"].value == 32
    assert not wrong.passed
    assert "input size 64, but the asset was configured with 32" in wrong.description


# ---------------------------------------------------------------------------- predictions


def rewrite_csv(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_one_row_per_test_image_fails_on_missing_and_repeated_rows(built: Built) -> None:
    with tampered(built, "predictions") as folder:
        rewrite_csv(folder / "predictions.csv", lambda lines: [*lines[:-1], lines[1]])
        evaluation = run_check("predictions:one_row_per_test_image")
    assert not evaluation.passed
    assert "1 missing" in evaluation.description and "1 repeated" in evaluation.description


def test_probabilities_sum_to_one_fails_on_a_bad_row(built: Built) -> None:
    def inflate(lines: list[str]) -> list[str]:
        cells = lines[1].split(",")
        cells[3] = f"{float(cells[3]) + 0.5:.6f}"
        return [lines[0], ",".join(cells), *lines[2:]]

    with tampered(built, "predictions") as folder:
        rewrite_csv(folder / "predictions.csv", inflate)
        evaluation = run_check("predictions:probabilities_sum_to_one")
    assert not evaluation.passed and evaluation.metadata["bad_rows"].value == 1
    assert "sum to" in evaluation.description or "most probable" in evaluation.description


def test_accuracy_below_the_floor_is_a_warning_by_default(built: Built) -> None:
    with tampered(built, "predictions") as folder:
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**metrics, "accuracy": 0.3}))
        default = run_check("predictions:accuracy_above_floor")
        lowered = run_check(
            "predictions:accuracy_above_floor",
            {"predictions_accuracy_above_floor": {"config": {"floor": 0.25}}},
        )
    assert not default.passed and default.severity == AssetCheckSeverity.WARN
    assert default.description == "accuracy 0.3000 < 0.5"
    assert lowered.passed and lowered.metadata["floor"].value == 0.25


def test_checks_are_factories_for_other_model_assets() -> None:
    from oct_assets.assets.cluster import cluster_model
    from oct_assets.assets.predictions import cluster_predictions
    from oct_assets.checks.model import build_model_checks
    from oct_assets.checks.predictions import build_predictions_checks

    keys = {k.to_user_string() for c in build_model_checks(cluster_model) for k in c.check_keys}
    assert keys == {"cluster_model:model_loads", "cluster_model:model_classes_and_input_size"}
    [_, _, floor] = build_predictions_checks(cluster_predictions, accuracy_floor=0.8)
    assert {k.to_user_string() for k in floor.check_keys} == {
        "cluster_predictions:accuracy_above_floor"
    }
