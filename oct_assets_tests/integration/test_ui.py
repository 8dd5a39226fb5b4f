"""The UI as a person uses it: `dagster dev` on loopback in a fresh DAGSTER_HOME, the whole
local graph launched through the GraphQL client, its metadata and check results read back, and
the pages rendered by headless Chromium (`scripts/screenshots.py`).

`dagster dev` is part of the test extra; Chromium comes from Debian (`.ci/install_ui.sh`). A
missing Chromium skips the screenshot test, or fails it when `OCT_REQUIRE_CLUSTER_TESTS=1` (CI).
"""

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ASSETS = ["raw_oct_images", "reduced_sample", "trained_model", "predictions"]
SERVING = ["champion_model", "inbox_predictions"]
RUN_CONFIG = {
    "ops": {
        "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
        "trained_model": {"config": {"epochs": 2, "image_size": 32, "batch_size": 16}},
        "predictions_accuracy_above_floor": {"config": {"floor": 0.0}},  # a 2-epoch model
    }
}
RESULTS = """
query Results($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) {
      runId
      metadataEntries {
        label
        ... on MarkdownMetadataEntry { mdStr }
        ... on FloatMetadataEntry { floatValue }
        ... on IntMetadataEntry { intValue }
        ... on TextMetadataEntry { text }
        ... on PathMetadataEntry { path }
        ... on BoolMetadataEntry { boolValue }
      }
    }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          blocking
          executionForLatestMaterialization {
            runId
            status
            evaluation { success severity description }
          }
        }
      }
    }
  }
}
"""
SENSORS = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    ... on Sensors { results { name sensorState { status } } }
  }
}
"""


def require(binary: str) -> str:
    """The binary's path; a skip when it is missing, or a failure where CI requires it."""
    path = shutil.which(binary)
    if path is None:
        message = f"`{binary}` not found (install it with .ci/install_ui.sh, as root)"
        if os.environ.get("OCT_REQUIRE_CLUSTER_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class UI:
    url: str
    client: DagsterGraphQLClient
    log: Path
    data: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_loaded(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
    request = urllib.request.Request(
        f"{url}/graphql",
        json.dumps({"query": query}).encode(),
        {"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited early:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not serving yet
        time.sleep(1)
    raise TimeoutError(f"dagster dev not ready after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def ui(tiny_tree_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """`dagster dev` as the README starts it, with the tiny tree, stopped (with its children)
    at the end."""
    tmp = tmp_path_factory.mktemp("ui")
    images = tmp / "images" / "OCT2017"
    shutil.copytree(tiny_tree_template, images, copy_function=shutil.copy2)
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OCT_DATA_DIR": str(tmp / "data"),
        "OCT_IMAGES_DIR": str(images),
        "OCT_INBOX_DIR": str(tmp / "inbox"),
    }
    (tmp / "inbox" / "clinic").mkdir(parents=True)
    for n, scan in enumerate(sorted(images.glob("test/*/*.jpeg"))[:3]):
        shutil.copy2(scan, tmp / "inbox" / "clinic" / f"scan {n}.jpeg")
    (tmp / "inbox" / "notes.txt").write_text("not a scan")
    port = free_port()
    log = tmp / "dagster_dev.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_loaded(url, proc, log)
        yield UI(url, DagsterGraphQLClient("127.0.0.1", port_number=port), log, tmp / "data")
    finally:
        proc.send_signal(signal.SIGTERM)  # dagster dev stops its webserver, daemon, code server
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def run_id(ui: UI) -> str:
    """The whole local graph, launched through GraphQL, finished."""
    run_id = ui.client.submit_job_execution("local_graph", run_config=RUN_CONFIG)
    deadline = time.monotonic() + 240
    while (status := ui.client.get_run_status(run_id)) not in (
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
        DagsterRunStatus.CANCELED,
    ):
        assert time.monotonic() < deadline, f"run {run_id} still {status} after 240s"
        time.sleep(2)
    assert status == DagsterRunStatus.SUCCESS, ui.log.read_text()[-4000:]
    return run_id


@pytest.fixture(scope="module")
def results(ui: UI, run_id: str) -> dict[str, dict]:
    keys = [{"path": [name]} for name in ASSETS]
    # `_execute` is the client's own GraphQL call, used here for a query it has no helper for.
    nodes = ui.client._execute(RESULTS, {"keys": keys})["assetNodes"]
    return {node["assetKey"]["path"][-1]: node for node in nodes}


@pytest.fixture(scope="module")
def serving(ui: UI, run_id: str) -> dict[str, dict]:
    """The `serving` job (champion, then the inbox's diagnoses) after the local graph."""
    config = {"ops": {"champion_model": {"config": {"accuracy_floor": 0.0}}}}
    serving_run = ui.client.submit_job_execution("serving", run_config=config)
    deadline = time.monotonic() + 180
    while (status := ui.client.get_run_status(serving_run)) not in (
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
        DagsterRunStatus.CANCELED,
    ):
        assert time.monotonic() < deadline, f"run {serving_run} still {status} after 180s"
        time.sleep(2)
    assert status == DagsterRunStatus.SUCCESS, ui.log.read_text()[-4000:]
    keys = [{"path": [name]} for name in SERVING]
    nodes = ui.client._execute(RESULTS, {"keys": keys})["assetNodes"]
    return {node["assetKey"]["path"][-1]: node for node in nodes}


def metadata(node: dict) -> dict[str, dict]:
    [materialization] = node["assetMaterializations"]
    return {entry["label"]: entry for entry in materialization["metadataEntries"]}


def inline_png(entry: dict) -> Image.Image:
    """The picture inlined in a markdown metadata entry, decoded."""
    md = entry["mdStr"]
    assert md.startswith("![") and "(data:image/png;base64," in md, md[:200]
    data = base64.b64decode(md.split("base64,", 1)[1].rstrip(")"))
    return Image.open(io.BytesIO(data))


def test_every_asset_materialised_by_the_run(results: dict, run_id: str, ui: UI) -> None:
    assert sorted(results) == sorted(ASSETS)
    for name, node in results.items():
        assert node["assetMaterializations"][0]["runId"] == run_id, name
        folder = Path(metadata(node)["path"]["path"])
        assert folder.parent == ui.data / name and (folder / "manifest.json").is_file()


def test_results_worth_looking_at_are_pictures(results: dict) -> None:
    predictions = metadata(results["predictions"])
    assert 0.0 <= predictions["accuracy"]["floatValue"] <= 1.0
    assert predictions["n_images"]["intValue"] == 12
    header = "| class | precision | recall | recall 95% CI | f1 | ROC AUC | support |"
    assert header in predictions["per_class"]["mdStr"]
    low, high = predictions["accuracy_95ci"]["text"].strip("[]").split(", ")
    assert 0.0 <= float(low) <= float(high) <= 1.0
    for label in ("confusion_matrix", "cam_grid"):
        picture = inline_png(predictions[label])
        assert picture.width > 200 and picture.height > 200, label
    sample = metadata(results["reduced_sample"])
    sheet = inline_png(sample["contact_sheet"])
    assert sheet.height >= 4 * 80  # one row of thumbnails per class
    assert "| split | CNV | DME | DRUSEN | NORMAL | total |" in sample["counts"]["mdStr"]


def test_check_results_are_shown(results: dict, run_id: str) -> None:
    expected = {
        "raw_oct_images": {
            "images_readable",
            "class_folders_known",
            "file_names_follow_pattern",
            "class_balance",
        },
        "reduced_sample": {"no_patient_in_both_splits", "every_class_in_both_splits"},
        "trained_model": {"model_loads", "model_classes_and_input_size"},
        "predictions": {
            "one_row_per_test_image",
            "probabilities_sum_to_one",
            "accuracy_above_floor",
        },
    }
    for name, node in results.items():
        checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
        assert set(checks) == expected[name]
        for check_name, check in checks.items():
            execution = check["executionForLatestMaterialization"]
            assert execution["runId"] == run_id, check_name
            assert execution["status"] == "SUCCEEDED", (check_name, execution)
            assert execution["evaluation"]["success"], (check_name, execution["evaluation"])
    blocking = {
        c["name"]
        for node in results.values()
        for c in node["assetChecksOrError"]["checks"]
        if c["blocking"]
    }
    assert blocking == {"no_patient_in_both_splits"}


def test_champion_and_inbox_diagnoses_are_shown(serving: dict) -> None:
    assert sorted(serving) == sorted(SERVING)
    champion = metadata(serving["champion_model"])
    assert champion["promoted"]["boolValue"] is True
    assert "## Intended use and limits" in champion["model_card"]["mdStr"]
    assert champion["export_max_abs_diff"]["floatValue"] < 1e-5
    inbox = metadata(serving["inbox_predictions"])
    assert inbox["n_files"]["intValue"] == 4 and inbox["n_scored"]["intValue"] == 3
    assert "notes.txt: not an image" in inbox["bad_files"]["mdStr"]
    assert inline_png(inbox["contact_sheet"]).width > 200


def test_automation_page_lists_the_sensors(ui: UI) -> None:
    selector = {"repositoryLocationName": "oct_assets", "repositoryName": "__repository__"}
    data = ui.client._execute(SENSORS, {"selector": selector})
    states = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
    assert states == {
        "automation_sensor": "RUNNING",
        "new_images_sensor": "STOPPED",
        "cluster_model_sensor": "STOPPED",
        "inbox_sensor": "STOPPED",
    }


def test_screenshots_show_the_graph_and_the_pictures(ui: UI, run_id: str, tmp_path: Path) -> None:
    require("chromium")
    out, shots = tmp_path / "ui.png", tmp_path / "shots"
    script = str(REPO / "scripts" / "screenshots.py")
    proc = subprocess.run(
        [sys.executable, script, "--url", ui.url, "--out", str(out), "--shots", str(shots)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for name in (
        "asset_graph",
        "predictions_confusion_matrix",
        "predictions_cam_grid",
        "reduced_sample_contact_sheet",
    ):
        with Image.open(shots / f"{name}.png") as page:
            assert page.size == (1600, 1000), name
            colours = page.convert("L").getextrema()
            assert colours[1] - colours[0] > 100, f"{name} is blank"
    with Image.open(out) as composite:
        assert composite.width == 1200 and composite.height > 600
