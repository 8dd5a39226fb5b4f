"""ClusterResource against a real sshd on loopback: auth, host keys, transfers, retries, env."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import dagster as dg
import pytest

from oct_assets.cluster import transfer
from oct_assets.cluster.errors import (
    ClusterAuthError,
    ClusterCommandError,
    ClusterCommandTimeout,
    ClusterConfigError,
    ClusterConnectionError,
    ClusterHostKeyError,
    RemoteFileNotFoundError,
)
from oct_assets.resources.cluster import ClusterResource, cluster_resource_from_env
from oct_assets_tests.cluster.upload import upload
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster
# A killed connection ends paramiko's SFTP prefetch thread with EOFError; that is the point.
drops = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

ALL_VARS = ("HOST", "PORT", "USER", "KEY_FILE", "PASSWORD", "KEY_PASSPHRASE", "KNOWN_HOSTS")


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", pub], capture_output=True, text=True)
    return out.stdout.split()[1]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part-" in p.name)


# -- commands -------------------------------------------------------------------------------


def test_run_returns_exit_code_stdout_stderr(cluster: ClusterResource) -> None:
    result = cluster.session.run("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(ClusterCommandError, match="exited 3"):
        cluster.session.run("echo broken >&2; exit 3", check=True)


def test_run_timeout(cluster: ClusterResource) -> None:
    with pytest.raises(ClusterCommandTimeout, match="sleep 30"):
        cluster.session.run("sleep 30", timeout=0.5)
    assert cluster.session.run("echo still usable").stdout == "still usable\n"


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ed25519", "rsa", "ed25519_passphrase"])
def test_key_auth(sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, key: str) -> None:
    if key == "ed25519_passphrase":
        no_cluster_env.setenv("OCT_CLUSTER_KEY_PASSPHRASE", sshd_server.passphrase)
    with sshd_server.resource(key_file=str(sshd_server.keys[key])) as resource:
        assert resource.session.run("whoami").stdout.strip() == sshd_server.user


def test_encrypted_key_without_passphrase_names_the_variable(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    resource = sshd_server.resource(key_file=str(sshd_server.keys["ed25519_passphrase"]))
    with pytest.raises(ClusterAuthError, match="OCT_CLUSTER_KEY_PASSPHRASE"):
        resource.session.run("true")
    no_cluster_env.setenv("OCT_CLUSTER_KEY_PASSPHRASE", "not-the-passphrase-xyz")
    resource = sshd_server.resource(key_file=str(sshd_server.keys["ed25519_passphrase"]))
    with pytest.raises(ClusterAuthError, match="cannot decrypt") as info:
        resource.session.run("true")
    assert "not-the-passphrase-xyz" not in str(info.value)


def test_password_auth_keeps_the_password_out_of_dagster(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    no_cluster_env.setenv("OCT_CLUSTER_PASSWORD", sshd_server.password)
    resource = sshd_server.resource(username=sshd_server.user, key_file=None)

    @dg.asset
    def whoami(cluster: ClusterResource) -> str:
        return cluster.session.run("id -un").stdout.strip()

    result = dg.materialize([whoami], resources={"cluster": resource})
    assert result.output_for_node("whoami") == sshd_server.user
    recorded = [repr(result.dagster_run.run_config), repr(resource)]
    recorded += [repr(event) for event in result.all_events]
    assert not [text for text in recorded if sshd_server.password in text]


def _assert_secret_free(exc: BaseException, secret: str, caplog: pytest.LogCaptureFixture):
    shown = "".join(traceback.format_exception(exc))
    assert secret not in str(exc)
    assert secret not in repr(exc)
    assert secret not in shown
    assert secret not in caplog.text


def test_wrong_password_is_a_clear_error_without_the_secret(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + sshd_server.password[::-1]
    no_cluster_env.setenv("OCT_CLUSTER_PASSWORD", wrong)
    resource = sshd_server.resource(username=sshd_server.user, key_file=None)
    with pytest.raises(ClusterAuthError) as info:
        resource.session.run("true")
    message = str(info.value)
    assert f"{sshd_server.user}@127.0.0.1:{sshd_server.port}" in message
    assert "password" in message
    _assert_secret_free(info.value, wrong, caplog)


def test_wrong_key_is_refused_without_retrying(
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    resource = sshd_server.resource(key_file=str(stranger), retries=2)
    with pytest.raises(
        ClusterAuthError, match=rf"{sshd_server.user}@127.0.0.1:{sshd_server.port}.*public key"
    ):
        resource.session.run("true")
    assert "retry" not in caplog.text


# -- host keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("known_hosts_exists", [True, False])
def test_unknown_host_key_is_refused(
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    known_hosts_exists: bool,
) -> None:
    known_hosts = tmp_path / "known_hosts"
    if known_hosts_exists:
        known_hosts.write_text("")
    resource = sshd_server.resource(known_hosts=str(known_hosts), retries=2)
    with pytest.raises(ClusterHostKeyError) as info:
        resource.session.run("true")
    assert "retry" not in caplog.text
    message = str(info.value)
    assert f"127.0.0.1:{sshd_server.port}" in message
    assert fingerprint(sshd_server.host_key.with_suffix(".pub")) in message
    assert known_hosts.exists() == known_hosts_exists  # nothing recorded


def _impostor_known_hosts(sshd_server: SshServer, tmp_path: Path) -> Path:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {blob}\n")
    return known_hosts


@pytest.mark.parametrize("tofu", [False, True])
def test_changed_host_key_is_refused_even_with_tofu(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, tmp_path: Path, tofu: bool
) -> None:
    known_hosts = _impostor_known_hosts(sshd_server, tmp_path)
    before = known_hosts.read_text()
    resource = sshd_server.resource(known_hosts=str(known_hosts), trust_on_first_use=tofu)
    with pytest.raises(ClusterHostKeyError, match="changed") as info:
        resource.session.run("true")
    assert f"127.0.0.1:{sshd_server.port}" in str(info.value)
    assert fingerprint(sshd_server.host_key.with_suffix(".pub")) in str(info.value)
    assert known_hosts.read_text() == before


def test_trust_on_first_use_records_the_key(
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with sshd_server.resource(known_hosts=str(known_hosts), trust_on_first_use=True) as resource:
        assert resource.session.run("true").ok
    assert known_hosts.read_text().strip() == sshd_server.known_hosts_line
    assert oct(known_hosts.stat().st_mode & 0o777) == "0o600"
    assert fingerprint(sshd_server.host_key.with_suffix(".pub")) in caplog.text
    with sshd_server.resource(known_hosts=str(known_hosts)) as strict:
        assert strict.session.run("true").ok


# -- transfers ------------------------------------------------------------------------------


def test_upload_and_download_are_verified_and_atomic(
    cluster: ClusterResource, sshd_server: SshServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * 2**20 + 17)
    local = tmp_path / "payload.bin"
    local.write_bytes(data)
    sent = upload(cluster.session, local, "transfer/sub/payload.bin")
    remote = sshd_server.remote_dir / "transfer" / "sub" / "payload.bin"
    assert sent.destination == str(remote)
    assert remote.read_bytes() == data
    assert cluster.session.sha256("transfer/sub/payload.bin") == sha256_bytes(data) == sent.sha256

    back = tmp_path / "back" / "payload.bin"
    got = transfer.download(cluster.session, str(remote), back)
    assert back.read_bytes() == data and got.sha256 == sha256_bytes(data)
    assert cluster.session.stat("transfer/sub/payload.bin").size == len(data)
    assert leftovers(sshd_server.remote_dir) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, 1, 128 * 1024, 128 * 1024 + 1])
def test_download_sizes_around_the_read_block(
    cluster: ClusterResource, sshd_server: SshServer, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    (sshd_server.remote_dir / f"edge{size}.bin").write_bytes(data)
    result = transfer.download(cluster.session, f"edge{size}.bin", tmp_path / "edge.bin")
    assert (tmp_path / "edge.bin").read_bytes() == data and result.size == size


def test_missing_remote_file_names_the_path(cluster: ClusterResource, tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(RemoteFileNotFoundError, match=r"no/such/file\.bin") as info:
        transfer.download(cluster.session, "no/such/file.bin", target)
    assert isinstance(info.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []
    for op in (cluster.session.sha256, cluster.session.stat, cluster.session.read_tail):
        with pytest.raises(RemoteFileNotFoundError, match=r"no/such/file\.bin"):
            op("no/such/file.bin")
    assert not cluster.session.exists("no/such/file.bin")


def _big_remote_file(cluster: ClusterResource, name: str, mib: int) -> str:
    path = cluster.session.resolve(f"drops/{name}")
    cluster.session.run(f"mkdir -p {os.path.dirname(path)} && head -c {mib}M /dev/urandom > {path}")
    return path


@drops
def test_download_recovers_from_a_dropped_connection(
    cluster: ClusterResource,
    sshd_server: SshServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = _big_remote_file(cluster, "big.bin", 64)
    expected = cluster.session.sha256(remote)
    killed: list[int] = []

    def drop_once(done: int, total: int) -> None:
        if not killed and done >= 4 * 2**20:
            killed.append(sshd_server.kill_sessions())

    local = tmp_path / "out" / "big.bin"
    result = transfer.download(cluster.session, remote, local, progress=drop_once)
    assert killed and killed[0] > 0
    assert "retry 1/" in caplog.text
    assert result.sha256 == expected == hashlib.sha256(local.read_bytes()).hexdigest()
    assert sorted(p.name for p in local.parent.iterdir()) == ["big.bin"]


@drops
def test_download_that_keeps_failing_leaves_no_file(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with sshd_server.resource(retries=0) as resource:
        remote = _big_remote_file(resource, "big0.bin", 64)

        def drop(done: int, total: int) -> None:
            if done >= 4 * 2**20:
                sshd_server.kill_sessions()

        with pytest.raises(ClusterConnectionError, match="download"):
            transfer.download(resource.session, remote, tmp_path / "big0.bin", progress=drop)
    assert list(tmp_path.iterdir()) == []


@drops
def test_upload_recovers_from_a_dropped_connection(
    cluster: ClusterResource, sshd_server: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(48 * 2**20))
    killed: list[int] = []

    def drop_once(done: int, total: int) -> None:
        if not killed and done >= 8 * 2**20:
            killed.append(sshd_server.kill_sessions())

    result = upload(cluster.session, local, "drops/up.bin", progress=drop_once)
    assert killed and killed[0] > 0
    remote = sshd_server.remote_dir / "drops" / "up.bin"
    assert result.sha256 == hashlib.sha256(remote.read_bytes()).hexdigest()
    assert result.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert leftovers(sshd_server.remote_dir / "drops") == []


def test_upload_dir_skips_files_that_match(
    cluster: ClusterResource,
    sshd_server: SshServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sample = tmp_path / "sample"
    for i in range(12):
        folder = sample / ("NORMAL" if i % 2 else "CNV")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"scan {i:02d}.jpeg").write_bytes(os.urandom(2000 + i))
    first = transfer.upload_dir(cluster.session, sample, "samples/s1")
    assert len(first.uploaded) == 12 and first.skipped == ()

    caplog.set_level(logging.DEBUG, logger="oct_assets.cluster.ssh")
    second = transfer.upload_dir(cluster.session, sample, "samples/s1")
    assert second.uploaded == () and len(second.skipped) == 12
    commands = [r.getMessage() for r in caplog.records if "$ " in r.getMessage()]
    assert len(commands) == 1 and "sha256sum" in commands[0]  # one round trip, not twelve

    (sample / "CNV" / "scan 00.jpeg").write_bytes(b"changed")
    (sample / "DME").mkdir()
    (sample / "DME" / "new.jpeg").write_bytes(b"new")
    third = transfer.upload_dir(cluster.session, sample, "samples/s1")
    assert sorted(third.uploaded) == ["CNV/scan 00.jpeg", "DME/new.jpeg"]
    remote = sshd_server.remote_dir / "samples" / "s1"
    for path in sample.rglob("*.jpeg"):
        assert (remote / path.relative_to(sample)).read_bytes() == path.read_bytes()
    assert leftovers(remote) == []


def test_read_from_follows_a_growing_file(cluster: ClusterResource) -> None:
    log = cluster.session.resolve("logs/job.log")
    assert cluster.session.read_from(log, 0) == (b"", 0)  # not written yet
    cluster.session.run(f"mkdir -p {os.path.dirname(log)} && printf 'one\\ntwo\\n' > {log}")
    data, offset = cluster.session.read_from(log, 0)
    assert (data, offset) == (b"one\ntwo\n", 8)
    cluster.session.run(f"printf 'three\\n' >> {log}")
    assert cluster.session.read_from(log, offset) == (b"three\n", 14)
    assert cluster.session.read_tail(log, max_bytes=9) == "three\n"


# -- configuration from the environment -----------------------------------------------------


def test_factory_reads_nothing_until_used(no_cluster_env: pytest.MonkeyPatch) -> None:
    resource = cluster_resource_from_env()
    dg.Definitions(resources={"cluster": resource})  # loading must not raise
    with pytest.raises(ClusterConfigError) as info:
        resource.session.run("true")
    message = str(info.value)
    for name in ("HOST", "USER", "REMOTE_DIR", "KEY_FILE"):
        assert f"OCT_CLUSTER_{name}" in message
    assert "OCT_CLUSTER_PASSWORD" in message  # as the alternative to a key file


def test_project_definitions_load_without_cluster_env(no_cluster_env: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("oct_assets.definitions")
    assert isinstance(module.defs, dg.Definitions)


def test_definitions_load_imports_neither_torch_nor_paramiko() -> None:
    """paramiko (with cryptography) loads with the first SSH session, torch inside the assets."""
    code = (
        "import sys, oct_assets.definitions\n"
        "heavy = ('torch', 'paramiko')\n"
        "print(*[m for m in heavy if m in sys.modules], sep=',')\n"
        "from oct_assets.resources.cluster import ClusterResource\n"
        "ClusterResource(host='h', username='u', remote_dir='/r', allow_agent=True).session\n"
        "print(*[m for m in heavy if m in sys.modules], sep=',')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    at_load, after_session = out.stdout.splitlines()
    assert at_load == ""
    assert after_session == "paramiko"  # the check sees a module once it is loaded


def test_step_fails_at_start_naming_the_missing_variables(
    no_cluster_env: pytest.MonkeyPatch,
) -> None:
    ran: list[bool] = []

    @dg.asset
    def uses_cluster(cluster: ClusterResource) -> None:
        ran.append(True)

    with pytest.raises(dg.DagsterResourceFunctionError) as info:
        dg.materialize([uses_cluster], resources={"cluster": cluster_resource_from_env()})
    assert isinstance(info.value.user_exception, ClusterConfigError)
    assert "OCT_CLUSTER_HOST, OCT_CLUSTER_USER" in str(info.value.user_exception)
    assert ran == []


def test_factory_uses_the_environment(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(sshd_server.port),
        "USER": sshd_server.user,
        "KEY_FILE": str(sshd_server.keys["ed25519_passphrase"]),
        "KEY_PASSPHRASE": sshd_server.passphrase,
        "KNOWN_HOSTS": str(sshd_server.known_hosts),
        "REMOTE_DIR": str(sshd_server.remote_dir / "from_env"),
    }
    assert set(env) | {"PASSWORD"} == set(ALL_VARS) | {"REMOTE_DIR"}
    for name, value in env.items():
        no_cluster_env.setenv(f"OCT_CLUSTER_{name}", value)
    with cluster_resource_from_env() as resource:
        assert resource.session.resolve("x") == str(sshd_server.remote_dir / "from_env" / "x")
        assert resource.session.run("whoami").stdout.strip() == sshd_server.user


def test_explicit_fields_and_envvar_beat_defaults(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    no_cluster_env.setenv("OCT_CLUSTER_HOST", "192.0.2.1")  # must lose to the field
    no_cluster_env.setenv("MY_PORT", str(sshd_server.port))
    with sshd_server.resource(port=dg.EnvVar.int("MY_PORT")) as resource:
        assert resource.settings().host == "127.0.0.1"
        assert resource.session.run("true").ok
    no_cluster_env.setenv("OCT_CLUSTER_PORT", "ssh")
    with pytest.raises(ClusterConfigError, match="'ssh' is not a TCP port"):
        ClusterResource(
            host="h", username="u", remote_dir="/r", key_file=str(sshd_server.keys["rsa"])
        ).settings()
