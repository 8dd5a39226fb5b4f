"""Runs that share a data folder never mix outputs; a copied data folder reads its own files."""

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance, InputContext, materialize

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.dataset.scan import content_fingerprint, scan_tree
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets.store.salt import read_manifest
from oct_assets_tests.integration.test_assets import RESOURCES, metadata, run_config, salts


def _materialize(instance: DagsterInstance, selection=None, **config: dict):
    ops = run_config(**config)["ops"]
    if selection:
        ops = {k: v for k, v in ops.items() if k in selection}
    return materialize(
        LOCAL_GRAPH,
        selection=selection,
        instance=instance,
        resources={**RESOURCES, "io_manager": LatestArtifactIOManager()},
        run_config={"ops": ops},
    )


def test_a_slowed_run_reads_its_own_model(
    tiny_tree: Path, data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A waits just before `predictions` loads its model; run B (another instance, other
    settings) completes on the same data folder meanwhile; A still scores A's model."""
    a_waiting, b_done = threading.Event(), threading.Event()
    original = LatestArtifactIOManager.load_input

    def slowed(self: LatestArtifactIOManager, context: InputContext):
        if (
            threading.current_thread().name == "run-a"
            and context.op_def.name == "predictions"
            and context.asset_key.path[-1] == "trained_model"
        ):
            a_waiting.set()
            assert b_done.wait(300)
        return original(self, context)

    monkeypatch.setattr(LatestArtifactIOManager, "load_input", slowed)
    results = {}

    def run_a() -> None:
        try:
            with DagsterInstance.ephemeral() as instance:  # disposed in the thread using it
                results["a"] = _materialize(instance, train={"epochs": 2})
        finally:
            a_waiting.set()  # also when A failed early: the test must not hang

    thread = threading.Thread(target=run_a, name="run-a")
    thread.start()
    try:
        assert a_waiting.wait(300) and "a" not in results, "run A never reached predictions"
        results["b"] = _materialize(DagsterInstance.ephemeral(), train={"epochs": 3, "seed": 5})
    finally:
        b_done.set()
        thread.join(300)
    a, b = salts(results["a"]), salts(results["b"])
    assert a["trained_model"] != b["trained_model"]
    predictions = read_manifest(data_env / "predictions" / a["predictions"])
    assert predictions.upstream["model"] == a["trained_model"]
    # The pointer beside the data names B's model, the last one published: only the event log
    # kept A on its own.
    pointer = json.loads((data_env / "trained_model" / "latest.json").read_text())
    assert pointer["salt"] == b["trained_model"]


def test_a_copied_data_folder_reads_its_own_files(
    tiny_tree: Path, data_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _materialize(DagsterInstance.ephemeral())
    copy = tmp_path / "copied_data"
    shutil.copytree(data_env, copy, symlinks=True)
    shutil.rmtree(data_env)
    monkeypatch.setenv("OCT_DATA_DIR", str(copy))
    # A fresh instance has no history: the inputs come from the copy's latest.json pointers.
    again = _materialize(DagsterInstance.ephemeral(), selection=["predictions"])
    assert metadata(again, "predictions")["cache_hit"] is True
    assert metadata(again, "predictions")["path"] == str(
        copy / "predictions" / salts(first)["predictions"]
    )


def test_a_run_reads_the_upstream_recorded_when_it_started(tiny_tree: Path, data_env: Path) -> None:
    """An upstream outside the run's selection: the instance's record wins over the pointer
    that another instance's run moved on."""
    mine = DagsterInstance.ephemeral()
    first = _materialize(mine)
    _materialize(DagsterInstance.ephemeral(), train={"seed": 7})  # moves latest.json
    again = _materialize(mine, selection=["predictions"])
    assert metadata(again, "predictions")["salt"] == salts(first)["predictions"]


def test_a_source_edited_in_place_leaves_the_sample_unchanged(
    tiny_tree: Path, data_env: Path
) -> None:
    result = materialize(
        LOCAL_GRAPH[:2],
        instance=DagsterInstance.ephemeral(),
        resources={"io_manager": LatestArtifactIOManager()},
        run_config={"ops": {"reduced_sample": run_config()["ops"]["reduced_sample"]}},
    )
    sample = result.output_for_node("reduced_sample").path
    sampled = sorted(p for p in sample.rglob("*.jpeg"))
    before = {p: p.read_bytes() for p in sampled}
    source = tiny_tree / sampled[0].relative_to(sample)
    inode = source.stat().st_ino
    with open(source, "r+b") as f:  # same inode, as editors and sync tools rewrite
        f.write(b"\xff" * 64)
    assert source.stat().st_ino == inode
    assert {p: p.read_bytes() for p in sampled} == before


@pytest.mark.parametrize("fingerprint", ["stat", "content"])
def test_the_same_images_at_two_paths_give_the_same_salts(
    tiny_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fingerprint: str
) -> None:
    moved = tmp_path / "elsewhere" / "OCT2017"
    shutil.copytree(tiny_tree, moved, copy_function=shutil.copy2)
    found = {}
    for name, root in (("here", tiny_tree), ("there", moved)):
        monkeypatch.setenv("OCT_IMAGES_DIR", str(root))
        monkeypatch.setenv("OCT_DATA_DIR", str(tmp_path / f"data-{name}"))
        config = run_config()
        config["ops"]["raw_oct_images"] = {"config": {"fingerprint": fingerprint}}
        found[name] = materialize(
            LOCAL_GRAPH,
            instance=DagsterInstance.ephemeral(),
            resources={**RESOURCES, "io_manager": LatestArtifactIOManager()},
            run_config=config,
        )
        assert metadata(found[name], "raw_oct_images")["root"] == str(root)
    assert salts(found["here"]) == salts(found["there"])


def test_content_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tiny_tree: Path) -> None:
    scan = scan_tree(tiny_tree)
    before = (scan.fingerprint, content_fingerprint(tiny_tree, scan.records))
    image = tiny_tree / scan.records[0].path
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    after_scan = scan_tree(tiny_tree)
    assert after_scan.fingerprint == before[0]  # stat-only: documented blind spot
    assert content_fingerprint(tiny_tree, after_scan.records) != before[1]


def _instance(kind: str, home: Path, request: pytest.FixtureRequest) -> DagsterInstance:
    """A persistent instance of one of the storages Dagster ships, in `home`."""
    home.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":  # the default of a DAGSTER_HOME with no dagster.yaml: one db per run
        return DagsterInstance.from_config(str(home))
    if kind == "consolidated sqlite":
        (home / "dagster.yaml").write_text(
            "event_log_storage:\n"
            "  module: dagster.core.storage.event_log\n"
            "  class: ConsolidatedSqliteEventLogStorage\n"
            f"  config: {{base_dir: {home / 'history'}}}\n"
        )
        return DagsterInstance.from_config(str(home))
    postgres = request.getfixturevalue("postgres").create_database(f"lineage_{home.parent.name}")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for key, value in postgres.env().items():
        monkeypatch.setenv(key, value)
    shutil.copy(Path(__file__).parents[2] / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return DagsterInstance.from_config(str(home))


@pytest.mark.parametrize("kind", ["sqlite", "consolidated sqlite", "postgres"])
def test_a_partial_selection_reads_its_own_instances_upstream(
    tiny_tree: Path, data_env: Path, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """H1 samples with one setting, H2 (another instance, same data folder) with another and
    moves `latest.json`; H1's `trained_model` alone still trains on H1's sample."""
    h1 = _instance(kind, tmp_path / "h1", request)
    try:
        sample_only = ["raw_oct_images", "reduced_sample"]
        mine = _materialize(h1, selection=sample_only)
        theirs = _materialize(
            DagsterInstance.ephemeral(), selection=sample_only, sample={"seed": 9}
        )
        my_sample = metadata(mine, "reduced_sample")["salt"]
        assert metadata(theirs, "reduced_sample")["salt"] != my_sample
        pointer = json.loads((data_env / "reduced_sample" / "latest.json").read_text())
        assert pointer["salt"] != my_sample  # the shared pointer names H2's sample now
        model = _materialize(h1, selection=["trained_model"])
        folder = Path(metadata(model, "trained_model")["path"])
        assert read_manifest(folder).upstream["reduced_sample"] == my_sample
    finally:
        h1.dispose()
