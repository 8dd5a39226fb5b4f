"""Bulk staging (one tar stream, one `sha256sum -c`, a marker written last) against a real sshd."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from oct_assets.cluster.errors import ClusterConnectionError, TransferVerificationError
from oct_assets.cluster.staging import MARKER, stage_folder
from oct_assets.resources.cluster import ClusterResource
from oct_assets_tests.services.sshd import SshServer

pytestmark = pytest.mark.cluster
drops = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def make_folder(root: Path, n: int, size: int) -> Path:
    for i in range(n):
        folder = root / ("train" if i % 3 else "test") / ("CNV" if i % 2 else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"scan {i:03d}.jpeg").write_bytes(os.urandom(size + i))
    (root / "images.csv").write_text("file,split,label,patient\n")
    return root


def same_tree(local: Path, remote: Path) -> bool:
    def digests(folder: Path) -> dict[str, str]:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".oct-")
        }

    return digests(local) == digests(remote)


def test_second_stage_sends_nothing_and_a_corrupted_file_is_detected(
    cluster: ClusterResource,
    sshd_server: SshServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = make_folder(tmp_path / "sample", 30, 5000)
    first = stage_folder(cluster.session, local, "samples/s1", key="salt-1")
    remote = sshd_server.remote_dir / "samples" / "s1"
    assert first.sent_files == first.files == 31 and same_tree(local, remote)
    assert (remote / MARKER).is_file()
    assert not list(remote.parent.glob("s1.tmp-*"))

    caplog.set_level(logging.DEBUG, logger="oct_assets.cluster.ssh")
    second = stage_folder(cluster.session, local, "samples/s1", key="salt-1")
    assert (second.sent_files, second.sent_bytes, second.repaired) == (0, 0, ())
    commands = [r.getMessage() for r in caplog.records if "$ " in r.getMessage()]
    assert len(commands) == 2  # read the marker, check the manifest remotely: nothing sent

    victim = remote / "train" / "CNV" / "scan 001.jpeg"
    victim.write_bytes(b"bit rot")
    third = stage_folder(cluster.session, local, "samples/s1", key="salt-1")
    assert third.repaired == ("train/CNV/scan 001.jpeg",) and third.sent_files == 1
    assert "changed on the cluster" in caplog.text and same_tree(local, remote)


@drops
def test_dropped_connection_mid_stream_retries_or_fails_clearly(
    cluster: ClusterResource,
    sshd_server: SshServer,
    no_cluster_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    local = make_folder(tmp_path / "big", 40, 1 << 20)
    killed: list[int] = []

    def drop_once(sent: int) -> None:
        if not killed and sent >= 8 << 20:
            killed.append(sshd_server.kill_sessions())

    result = stage_folder(cluster.session, local, "samples/drop", key="k", progress=drop_once)
    remote = sshd_server.remote_dir / "samples" / "drop"
    assert killed and killed[0] > 0 and result.sent_files == 41
    assert same_tree(local, remote) and not list(remote.parent.glob("drop.tmp-*"))

    def drop(sent: int) -> None:
        if sent >= 8 << 20:
            sshd_server.kill_sessions()

    failed = pytest.raises(ClusterConnectionError, match=r"staging of .* failed after 1 attempt")
    with sshd_server.resource(retries=0) as once, failed:
        stage_folder(once.session, local, "samples/drop2", key="k", progress=drop)
    assert not (sshd_server.remote_dir / "samples" / "drop2").exists()  # nothing published


def test_images_already_on_the_cluster_are_not_sent(
    cluster: ClusterResource, sshd_server: SshServer, tmp_path: Path
) -> None:
    local = make_folder(tmp_path / "sample", 20, 20000)
    images = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.jpeg"))
    stage_folder(cluster.session, local, "oct2017", key="tree")  # the cluster's own copy
    staged = stage_folder(
        cluster.session,
        local,
        "samples/remote-root",
        key="s",
        remote_root="oct2017",
        from_remote_root=images,
    )
    assert staged.sent_files == 1 and staged.sent_bytes < 20000  # images.csv only
    assert same_tree(local, sshd_server.remote_dir / "samples" / "remote-root")

    (local / images[0]).write_bytes(b"the local scan differs from the cluster's")
    with pytest.raises(TransferVerificationError, match=images[0]):
        stage_folder(
            cluster.session,
            local,
            "samples/remote-root-2",
            key="s2",
            remote_root="oct2017",
            from_remote_root=images,
        )


def test_a_file_list_longer_than_a_pipe_buffer(
    cluster: ClusterResource, sshd_server: SshServer, tmp_path: Path
) -> None:
    """5,000 names (~150 KB of list): tar must not block on its list while we wait on it."""
    local = tmp_path / "many"
    for i in range(5000):
        folder = local / "train" / f"CLASS{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"CLASS{i % 4}-{9_000_000 + i}-1.jpeg").write_bytes(i.to_bytes(4, "big"))
    result = stage_folder(cluster.session, local, "samples/many", key="many")
    assert result.sent_files == 5000
    assert same_tree(local, sshd_server.remote_dir / "samples" / "many")
