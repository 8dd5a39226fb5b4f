"""`cluster_model_sensor` tick by tick against the real sshd of the cluster fixtures."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from oct_assets.definitions import defs
from oct_assets.resources.cluster import ClusterResource, cluster_resource_from_env
from oct_assets.sensors.cluster import cluster_model_sensor
from oct_assets_tests.services.daemons import free_port
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster

PATH_ENV = "OCT_CLUSTER_MODEL_PATH"


def put_model(server: SshServer, name: str, weights: bytes, meta: bytes = b'{"classes": []}'):
    """Write model.pt and model.json where the cluster user keeps models; return their hash."""
    folder = server.remote_dir / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(weights)
    (folder / "model.json").write_bytes(meta)
    for path in (folder.parent, folder, *folder.iterdir()):
        shutil.chown(path, server.user, server.user)
    sums = hashlib.sha256(weights).hexdigest() + hashlib.sha256(meta).hexdigest()
    return hashlib.sha256(sums.encode()).hexdigest()


def tick(resource: ClusterResource, cursor: str | None = None):
    with dg.build_sensor_context(cursor=cursor, resources={"cluster": resource}) as context:
        return cluster_model_sensor(context)


def skip_message(result) -> str:
    assert isinstance(result, dg.SkipReason), f"expected a skip, got {result!r}"
    message = result.skip_message or ""
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def model_name(no_cluster_env: pytest.MonkeyPatch) -> str:
    """A fresh remote model folder name, set as OCT_CLUSTER_MODEL_PATH."""
    name = f"sensor-{uuid.uuid4().hex[:8]}"
    no_cluster_env.setenv(PATH_ENV, f"models/{name}")
    return name


def test_first_tick_unchanged_and_changed_model(sshd_server: SshServer, model_name: str) -> None:
    content = put_model(sshd_server, model_name, b"weights v1")
    first = tick(sshd_server.resource())
    assert isinstance(first, dg.SensorResult) and first.cursor == content
    [request] = first.run_requests
    assert request.run_key == content
    assert request.asset_selection == [
        dg.AssetKey("cluster_model"),
        dg.AssetKey("cluster_predictions"),
    ]
    expected_config = {"mode": "fetch", "remote_model_path": f"models/{model_name}"}
    assert request.run_config == {"ops": {"cluster_model": {"config": expected_config}}}
    dg.validate_run_config(defs.resolve_job_def("cluster_branch"), request.run_config)

    assert "unchanged" in skip_message(tick(sshd_server.resource(), cursor=content))
    model_pt = sshd_server.remote_dir / "models" / model_name / "model.pt"
    os.utime(model_pt, (time.time() + 60, time.time() + 60))  # touched, same bytes
    assert "unchanged" in skip_message(tick(sshd_server.resource(), cursor=content))

    changed = put_model(sshd_server, model_name, b"weights v2, retrained")
    assert changed != content
    second = tick(sshd_server.resource(), cursor=content)
    assert isinstance(second, dg.SensorResult) and second.cursor == changed
    assert [r.run_key for r in second.run_requests] == [changed]


def test_default_model_path(sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch) -> None:
    content = put_model(sshd_server, "latest", b"the latest weights")
    [request] = tick(sshd_server.resource()).run_requests
    assert request.run_key == content
    config = request.run_config["ops"]["cluster_model"]["config"]
    assert config["remote_model_path"] == "models/latest"


def test_missing_remote_model_is_a_skip(sshd_server: SshServer, model_name: str) -> None:
    message = skip_message(tick(sshd_server.resource()))
    assert "no model" in message and f"models/{model_name}" in message

    put_model(sshd_server, model_name, b"weights")
    (sshd_server.remote_dir / "models" / model_name / "model.json").unlink()
    message = skip_message(tick(sshd_server.resource()))
    assert f"models/{model_name}/model.json does not exist" in message


def test_unreachable_host_is_a_skip_after_one_attempt(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    resource = sshd_server.resource(port=port, retries=3, retry_backoff_s=5.0)
    started = time.monotonic()
    message = skip_message(tick(resource, cursor="previous"))
    assert time.monotonic() - started < 5.0, "the sensor retried within its tick"
    assert f"127.0.0.1:{port} unreachable" in message and "ConnectionRefusedError" in message


def test_auth_and_host_key_failures_are_skips_without_secrets(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "Wr0ng-" + sshd_server.password[::-1]
    no_cluster_env.setenv("OCT_CLUSTER_PASSWORD", wrong)
    message = skip_message(tick(sshd_server.resource(key_file=None)))
    assert "authentication failed" in message and wrong not in message

    (tmp_path / "known_hosts").write_text("")
    message = skip_message(tick(sshd_server.resource(known_hosts=str(tmp_path / "known_hosts"))))
    assert "host key" in message and f"127.0.0.1:{sshd_server.port}" in message


def test_missing_settings_are_a_skip(no_cluster_env: pytest.MonkeyPatch) -> None:
    message = skip_message(tick(cluster_resource_from_env()))
    for name in ("OCT_CLUSTER_HOST", "OCT_CLUSTER_USER", "OCT_CLUSTER_REMOTE_DIR"):
        assert name in message


def test_wired_in_definitions_and_off_by_default() -> None:
    sensor = defs.resolve_sensor_def("cluster_model_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 300
    assert sensor.required_resource_keys == {"cluster"}
