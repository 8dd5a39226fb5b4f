"""The managed training environment on the real sshd + Slurm: built once, reused, raced, broken.

One test builds the project's real requirement set (torch, numpy, pillow, dagster-pipes; torch
from the CPU wheel on this machine's disk, about 30 s on an idle machine) and trains two real
jobs in it through `cluster_model` (Dagster, `train_for_salt`, Slurm). The reuse, race, lock,
failure, offline and uv tests install a small set (pillow alone, checked by importing PIL) into
a fresh remote folder each: the code path is the same, only the pins differ, and it keeps the
suite's time reasonable.

The cluster user gets this machine's pip sources (`local_pip_sources`): its find-links folder
holds torch 2.13.0's CPU wheel, which then wins over PyPI's CUDA build of the same release
(`2.13.0+cpu` sorts above `2.13.0`), as `torch_index_url` would on a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.cluster import environment as env_mod
from oct_assets.cluster.environment import (
    MARKER,
    EnvironmentSpec,
    Requirement,
    TrainingEnvironment,
    TrainingEnvironmentError,
    ensure_environment,
    env_hash,
    probe,
)
from oct_assets.cluster.layout import RemoteLayout
from oct_assets.cluster.ssh import SSHSession
from oct_assets.resources.cluster import ClusterResource
from oct_assets.resources.io_manager import LatestArtifactIOManager
from oct_assets_tests.integration.test_cluster_assets import sample_instance  # noqa: F401 - a fixture
from oct_assets_tests.services.slurm import SlurmCluster
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster

SMALL = EnvironmentSpec((Requirement("pillow", "13.0.0"),), imports=("PIL",))
TINY_TRAIN = {"epochs": 1, "image_size": 32, "batch_size": 16, "threads": 1, "decode_workers": 1}
QUICK_JOB = {"cpus_per_task": 1, "mem": None, "poll_interval_s": 0.5, "timeout_s": 600}


def local_pip_sources() -> str:
    """This machine's pip `find-links` and `extra-index-url` (root's user and env config), as
    a pip.conf; empty where none is set (then the cluster user installs from PyPI)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    values: dict[str, str] = {}
    for line in listed.splitlines():
        scope_key, _, value = line.partition("=")
        key = scope_key.split(".", 1)[-1]
        if key in ("find-links", "extra-index-url") and value:
            values[key] = value.strip("'\"")
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) if values else ""


@pytest.fixture(scope="module", autouse=True)
def cluster_user_pip(sshd_server: SshServer) -> Iterator[None]:
    """The cluster user's ~/.config/pip/pip.conf with this machine's pip sources."""
    text = local_pip_sources()
    conf = sshd_server.root / "home" / ".config" / "pip" / "pip.conf"
    if text:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
        give_to_user(sshd_server, conf.parent.parent, conf.parent, conf)
    yield
    conf.unlink(missing_ok=True)


def fresh_root(server: SshServer) -> Path:
    """A remote folder of its own for one test (the sshd's folder is shared by the session)."""
    return server.remote_dir / f"env-{uuid.uuid4().hex[:8]}"


def resource(server: SshServer, root: Path) -> ClusterResource:
    return server.resource(remote_dir=str(root), command_timeout_s=900.0)


@pytest.fixture
def remote(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> Iterator[tuple[SSHSession, Path]]:
    root = fresh_root(sshd_server)
    with resource(sshd_server, root) as res:
        yield res.session, root


def ensure(
    session: SSHSession, spec: EnvironmentSpec = SMALL, **kwargs
) -> tuple[TrainingEnvironment, list[str]]:
    """The environment and the lines it logged."""
    logs: list[str] = []
    layout = RemoteLayout(session.remote_root())
    return ensure_environment(session, layout, spec, log=logs.append, **kwargs), logs


def give_to_user(server: SshServer, *paths: Path) -> None:
    """Paths this (root) test made under the remote folder, handed to the cluster user."""
    for path in paths:
        shutil.chown(path, server.user, server.user)


def env_path(session: SSHSession, root: Path, spec: EnvironmentSpec = SMALL) -> Path:
    return root / "envs" / env_hash(spec, probe(session, "python3"))


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def published_in_place(env_dir: Path) -> bool:
    """The renamed venv names its own folder, not the temporary one it was built in."""
    activate = (env_dir / "bin" / "activate").read_text()
    return str(env_dir) in activate and ".tmp-" not in activate


def builds_logged(env_dir: Path) -> int:
    """How many builds ran: the build log gets one header line per installer run."""
    log = Path(f"{env_dir}.build.log")
    return log.read_text().count("== build ") if log.exists() else 0


def materialize_on_cluster(instance: DagsterInstance, server: SshServer, root: Path, seed: int):
    """`cluster_model` in train mode with the default Slurm settings: the managed env."""
    config = {"mode": "train", "training": {**TINY_TRAIN, "seed": seed}, "slurm": QUICK_JOB}
    return materialize(
        [*LOCAL_GRAPH[:2], cluster_model],
        selection=[cluster_model.key],
        instance=instance,
        resources={"io_manager": LatestArtifactIOManager(), "cluster": resource(server, root)},
        run_config={"ops": {"cluster_model": {"config": config}}},
        raise_on_error=False,
    )


def train_on_cluster(instance: DagsterInstance, server: SshServer, root: Path, seed: int):
    result = materialize_on_cluster(instance, server, root, seed)
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    return meta, logs


def test_first_job_builds_the_env_the_second_reuses_it(
    slurm_cluster: SlurmCluster,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    sample_instance: DagsterInstance,  # noqa: F811
) -> None:
    """The real requirement set, built before the first `cluster_model` job, trains it; a
    second job (another salt) reuses the env without running an installer."""
    root = fresh_root(sshd_server)
    first, first_logs = train_on_cluster(sample_instance, sshd_server, root, seed=1)
    second, logs = train_on_cluster(sample_instance, sshd_server, root, seed=2)
    assert first["salt"] != second["salt"] and first["slurm_state"] == "COMPLETED"
    built, reused = first["training_environment"], second["training_environment"]
    assert built["built"] and not reused["built"] and built["managed"]
    assert built["hash"] == reused["hash"] and built["path"] == reused["path"]
    env_dir = Path(built["path"])
    assert env_dir.parent == root / "envs" and (env_dir / MARKER).is_file()
    assert builds_logged(env_dir) == 1  # the second job ran no installer
    assert any(m.startswith(f"building training environment {env_dir}") for m in first_logs)
    assert any(m.startswith(f"reusing training environment {env_dir}") for m in logs)
    assert built["torch"].startswith("2.13.0") and built["python"].startswith("3.")
    assert built["installer"] == "pip"  # uv is not on the cluster user's PATH here
    if local_pip_sources():  # this machine's CPU wheel, not PyPI's CUDA build
        assert built["torch"] == "2.13.0+cpu" and built["cuda"] is None
    assert not list(root.glob("envs/*.tmp-*"))
    for meta in (first, second):
        [script] = (root / "jobs" / meta["salt"]).glob("*.sbatch")
        text = script.read_text()
        assert f"export {env_mod.HASH_VAR}={built['hash']}" in text
        assert f"{env_dir}/bin/python -m oct_assets.ml.train" in text
        model_json = json.loads(Path(meta["path"], "model.json").read_text())
        assert model_json["torch_version"] == built["torch"]
        recorded = model_json["environment"]  # by the trainer, from the job's environment
        assert recorded["hash"] == built["hash"] and recorded["torch"] == built["torch"]
        assert recorded["python"] == built["python"] and recorded["cuda"] == built["cuda"]


def test_a_requirement_that_cannot_install_fails_the_run_naming_it(
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    sample_instance: DagsterInstance,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Through `cluster_model`: the step fails before anything is submitted, naming the pin."""
    reqs = tmp_path / "node-requirements.txt"
    reqs.write_text("pillow==13.0.0\noct-assets-no-such-package==0.0.1\n")
    no_cluster_env.setattr(env_mod, "REQUIREMENTS_FILE", reqs)
    root = fresh_root(sshd_server)
    result = materialize_on_cluster(sample_instance, sshd_server, root, seed=3)
    assert not result.success
    error = result.failure_data_for_node("cluster_model").error.to_string()
    assert "TrainingEnvironmentError" in error and "oct-assets-no-such-package==0.0.1" in error
    assert not [p for p in (root / "envs").iterdir() if p.is_dir()]  # no env, no temp folder
    assert not (root / "jobs").exists()  # nothing was submitted


def test_reuse_runs_no_installer_and_says_so(remote: tuple[SSHSession, Path]) -> None:
    session, root = remote
    built, _ = ensure(session)
    assert built.built and Path(built.path).parent == root / "envs"
    marker = Path(built.path, MARKER)
    stamp = marker.stat().st_mtime_ns
    again, logs = ensure(session)
    assert not again.built and again.path == built.path and again.hash == built.hash
    assert builds_logged(Path(built.path)) == 1 and marker.stat().st_mtime_ns == stamp
    assert any("reusing training environment" in line for line in logs)
    assert again.facts["packages"] == {"pillow": "13.0.0"}
    assert published_in_place(Path(built.path))


def lock_waiters(lock: Path) -> int:
    """Processes blocked in `flock` on `lock` (each builder waits in one)."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"flock\0"):
                continue
            count += any(os.readlink(fd) == str(lock) for fd in (proc / "fd").iterdir())
        except OSError:
            continue
    return count


def hold_lock(server: SshServer, lock: Path) -> subprocess.Popen:
    """A process of ours holding the builders' flock until killed."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    give_to_user(server, lock.parent.parent, lock.parent, lock)
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
        " print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, lock], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_two_first_builders_at_once_build_it_once(
    sshd_server: SshServer, no_cluster_env: pytest.MonkeyPatch
) -> None:
    """Both builders are blocked on the lock before either may build: one builds, one reuses."""
    root = fresh_root(sshd_server)
    results: list[TrainingEnvironment | BaseException] = []
    with resource(sshd_server, root) as res:
        env_dir = env_path(res.session, root)
    holder = hold_lock(sshd_server, Path(f"{env_dir}.lock"))

    def builder() -> None:
        try:
            with resource(sshd_server, root) as own:
                results.append(ensure(own.session)[0])
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=builder) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while lock_waiters(Path(f"{env_dir}.lock")) < 2:
            assert time.monotonic() < deadline, f"builders never both waited: {results}"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
    for t in threads:
        t.join(300)
    assert len(results) == 2 and all(isinstance(r, TrainingEnvironment) for r in results), results
    assert sorted(r.built for r in results) == [False, True]
    assert builds_logged(env_dir) == 1 and (env_dir / MARKER).is_file()


def test_dead_builder_leaves_no_block_and_a_live_one_times_out_named(
    remote: tuple[SSHSession, Path], sshd_server: SshServer
) -> None:
    session, root = remote
    env_dir = env_path(session, root)
    live = hold_lock(sshd_server, Path(f"{env_dir}.lock"))
    leftover = Path(f"{env_dir}.tmp-99999")
    leftover.mkdir()
    (leftover / "half-installed").write_text("x")
    give_to_user(sshd_server, leftover, leftover / "half-installed")
    try:
        with pytest.raises(TrainingEnvironmentError) as caught:
            ensure(session, timeout_s=2)
        assert f"{env_dir}.lock" in str(caught.value) and "another build" in str(caught.value)
        assert not env_dir.exists()
    finally:
        live.send_signal(signal.SIGKILL)  # a builder killed while it holds the lock
        live.wait()
    env, _ = ensure(session)
    assert env.built and (env_dir / MARKER).is_file()
    assert not leftover.exists()  # the dead builder's half-built folder was removed, not used


def test_a_requirement_that_cannot_install_fails_naming_it(
    remote: tuple[SSHSession, Path],
) -> None:
    session, root = remote
    bad = Requirement("oct-assets-no-such-package", "0.0.1")
    spec = EnvironmentSpec((bad, *SMALL.requirements), imports=SMALL.imports)
    with pytest.raises(TrainingEnvironmentError) as caught:
        ensure(session, spec)
    message = str(caught.value)
    assert "oct-assets-no-such-package==0.0.1" in message and "pip install failed" in message
    assert "nothing was published" in message
    assert list((root / "envs").iterdir()) != []  # the lock and the build log stay
    assert not [p for p in (root / "envs").iterdir() if p.is_dir()]  # no env, no temp folder


def test_a_published_env_that_fails_its_check_is_refused_named(
    remote: tuple[SSHSession, Path],
) -> None:
    """An env damaged after it was built (a scratch purge) is never used for a job."""
    session, _root = remote
    env, _ = ensure(session)
    for init in Path(env.path).glob("lib/python*/site-packages/PIL/__init__.py"):
        init.write_text("raise ImportError('purged')\n")
    with pytest.raises(TrainingEnvironmentError) as caught:
        ensure(session)
    assert env.path in str(caught.value) and "purged" in str(caught.value)


def test_offline_wheels_are_staged_and_installed_without_an_index(
    remote: tuple[SSHSession, Path],
) -> None:
    """The cluster side sees no pip configuration and no index: only the staged wheels."""
    session, _root = remote
    no_index = ("export PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL=http://127.0.0.1:9/none",)
    spec = EnvironmentSpec(SMALL.requirements, offline=True, imports=SMALL.imports)
    env, logs = ensure(session, spec, setup=no_index)
    assert env.built and env.facts["packages"] == {"pillow": "13.0.0"}
    wheels = Path(f"{env.path}.wheels")
    assert [p.name.split("-")[0] for p in wheels.glob("*.whl")] == ["pillow"]
    assert any("from staged wheels, no index" in line for line in logs)


def test_uv_builds_where_it_is_on_path(
    remote: tuple[SSHSession, Path], sshd_server: SshServer
) -> None:
    """With uv on the cluster's PATH the env is made by `uv venv` + `uv pip install`."""
    session, _root = remote
    uv = shutil.which("uv") or Path(sys.executable).with_name("uv")
    assert Path(uv).is_file(), "the test extra installs uv (pyproject.toml)"
    bin_dir = sshd_server.root / "home" / "uv-bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy2(uv, bin_dir / "uv")  # the cluster user may not reach this venv's folder
    give_to_user(sshd_server, bin_dir, bin_dir / "uv")
    # uv reads its own settings, not pip.conf: this machine's TLS goes by the system CA bundle.
    setup = (f"export PATH={bin_dir}:$PATH UV_NATIVE_TLS=1",)
    env, _ = ensure(session, setup=setup)
    assert env.built and env.facts["installer"] == "uv"
    assert published_in_place(Path(env.path))
    assert env.facts["packages"] == {"pillow": "13.0.0"}
    again, _ = ensure(session, setup=setup)
    assert not again.built and again.path == env.path


def test_a_dropped_connection_mid_build_publishes_one_whole_env(
    remote: tuple[SSHSession, Path], sshd_server: SshServer
) -> None:
    """The build goes on on the cluster when the SSH connection drops; the retried command
    waits on its lock and takes the env it published: one build, nothing half-built."""
    session, root = remote
    env_dir = env_path(session, root)
    results: list[TrainingEnvironment | BaseException] = []

    def build() -> None:
        try:
            results.append(ensure(session)[0])
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    deadline = time.monotonic() + 60
    while not list(env_dir.parent.glob(f"{env_dir.name}.tmp-*")):
        assert time.monotonic() < deadline and thread.is_alive(), f"no build started: {results}"
        time.sleep(0.05)
    # The connection drops while pip runs: its sshd processes die, the build's do not.
    sshds = [p for p in sshd_server.session_pids() if comm(p).startswith("sshd")]
    for pid in sshds:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert sshds
    thread.join(300)
    [env] = results
    assert isinstance(env, TrainingEnvironment), env
    assert env.path == str(env_dir) and (env_dir / MARKER).is_file()
    assert not env.built  # the retried command found the env the first one's build published
    assert builds_logged(env_dir) == 1 and published_in_place(env_dir)
    assert not list(env_dir.parent.glob(f"{env_dir.name}.tmp-*"))
