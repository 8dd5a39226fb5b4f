"""Staging a folder on the cluster in bulk: one tar stream over the SSH channel, verified end to
end with one `sha256sum -c`, published with a marker written last.

The local side computes a sha256 manifest of the folder's files, pipes `tar -cf -` into a remote
`tar -xf -` through one exec channel (no round trip per file), checks the whole manifest with one
remote `sha256sum -c`, then renames the temporary folder into place and writes the marker
(`.oct-staged.json`, naming the key, e.g. the sample's salt, and the manifest's digest).

A folder whose marker names the same key and manifest is not sent again; its files are checked
remotely (`sha256sum -c`, no network traffic) and any that changed on the cluster are re-sent
alone and checked again. A connection that drops mid-stream costs one attempt of the whole
operation (`SSHSession.retrying`); the attempt's temporary folder is removed by the next one,
and folders of stagings that gave up are swept a day later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from oct_assets.cluster.errors import ClusterCommandError, TransferVerificationError
from oct_assets.cluster.ssh import SSHSession
from oct_assets.contracts.files import sha256_file

logger = logging.getLogger(__name__)

MARKER = ".oct-staged.json"
MANIFEST = ".oct-manifest.sha256"
STREAM_CHUNK = 1 << 20
# A temporary folder older than this belongs to a staging whose retries ran out (none takes a day).
ABANDONED_MINUTES = 24 * 60


@dataclass(frozen=True)
class StageResult:
    """Where the folder is, how many files and bytes crossed the network, and what was repaired."""

    remote_dir: str
    files: int
    sent_files: int
    sent_bytes: int
    repaired: tuple[str, ...]
    seconds: float


def manifest(local_dir: Path, workers: int = 4) -> dict[str, str]:
    """sha256 of every file under `local_dir`, keyed by sorted relative POSIX path."""
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    names = [p.relative_to(local_dir).as_posix() for p in files]
    bad = [n for n in names if "\n" in n or "\\" in n or n.startswith(".oct-")]
    if bad:
        raise ValueError(f"cannot stage {local_dir}: unsupported file names {bad[:5]}")
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large buffers
        return dict(zip(names, pool.map(sha256_file, files), strict=True))


def manifest_text(digests: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in digests.items())


def stage_folder(
    session: SSHSession,
    local_dir: Path,
    remote_dir: str,
    *,
    key: str,
    remote_root: str | None = None,
    from_remote_root: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> StageResult:
    """Make `remote_dir` a verified copy of `local_dir`, sending only what it lacks.

    With `remote_root`, the files named in `from_remote_root` (relative paths, the same under
    `local_dir` and under `remote_root`) are copied on the cluster from there instead of crossing
    the network; the manifest check then proves the cluster's copies are the bytes meant here.
    """
    started = time.monotonic()
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"local folder {local_dir} does not exist")
    target = session.resolve(remote_dir)
    digests = manifest(local_dir)
    text = manifest_text(digests)
    marker = {"key": key, "manifest_sha256": hashlib.sha256(text.encode()).hexdigest()}
    stale: list[str] = []

    def op() -> StageResult:
        _remove(session, stale)
        if _read_marker(session, target) == marker:
            bad = _check(session, target)
            if not bad:
                return StageResult(target, len(digests), 0, 0, (), time.monotonic() - started)
            logger.warning("%d staged file(s) changed on the cluster: %s", len(bad), bad[:10])
            sent = _stream(session, local_dir, bad, target, progress)
            still = _check(session, target)
            if still:
                raise TransferVerificationError(_mismatch(session, target, still))
            return StageResult(
                target, len(digests), len(bad), sent, tuple(bad), time.monotonic() - started
            )
        _sweep_abandoned(session, target)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
        stale.append(tmp)
        there = set(from_remote_root) if remote_root else set()
        if there:
            _copy_on_cluster(session, session.resolve(remote_root or "."), sorted(there), tmp)
        to_send = [name for name in digests if name not in there]
        sent = _stream(session, local_dir, to_send, tmp, progress)
        _write(session, posixpath.join(tmp, MANIFEST), text)
        bad = _check(session, tmp)
        if bad:
            raise TransferVerificationError(_mismatch(session, tmp, bad))
        q = shlex.quote
        # Replace an unmarked (incomplete) folder; then the marker, written last, publishes it.
        session.run(f"rm -rf -- {q(target)} && mv -T -- {q(tmp)} {q(target)}", check=True)
        stale.clear()
        _write(session, posixpath.join(target, MARKER), json.dumps(marker) + "\n")
        return StageResult(target, len(digests), len(to_send), sent, (), time.monotonic() - started)

    result = session.retrying(f"staging of {local_dir} to {target}", op)
    logger.info(
        "staged %s -> %s:%s (%d of %d files sent, %.1f MB, %.1fs)",
        local_dir,
        session.settings.host,
        target,
        result.sent_files,
        result.files,
        result.sent_bytes / 1e6,
        result.seconds,
    )
    return result


def _sweep_abandoned(session: SSHSession, target: str) -> None:
    """Remove temporary folders of stagings to `target` that gave up more than a day ago."""
    parent, name = posixpath.split(target)
    pattern = shlex.quote(f"{name}.tmp-*")
    session.run(
        f"find {shlex.quote(parent)} -maxdepth 1 -name {pattern} -mmin +{ABANDONED_MINUTES}"
        " -exec rm -rf -- {} + 2>/dev/null; true"
    )


def _copy_on_cluster(session: SSHSession, root: str, names: list[str], dest: str) -> None:
    """Copy `names` from `root` into `dest` on the cluster (one command, names on stdin)."""
    q = shlex.quote
    listing = [b"".join(name.encode() + b"\0" for name in names)]
    _pipe(
        session,
        f"mkdir -p -- {q(dest)} && cd -- {q(root)} && xargs -0 cp --parents -t {q(dest)} --",
        listing,
    )


def _read_marker(session: SSHSession, target: str) -> dict | None:
    result = session.run(f"cat -- {shlex.quote(posixpath.join(target, MARKER))}")
    if not result.ok:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def _check(session: SSHSession, folder: str) -> list[str]:
    """Files of `folder` whose sha256 differs from its manifest (one remote command)."""
    q = shlex.quote
    result = session.run(f"cd -- {q(folder)} && sha256sum --quiet -c {MANIFEST} 2>/dev/null")
    if result.ok:
        return []
    bad = [line.rsplit(": ", 1)[0] for line in result.stdout.splitlines() if ": " in line]
    if not bad:
        raise ClusterCommandError(f"sha256sum -c in {folder} failed: {result.stderr}", result)
    return bad


def _mismatch(session: SSHSession, folder: str, bad: Sequence[str]) -> str:
    return (
        f"staging to {session.settings.host}:{folder}: {len(bad)} file(s) differ from what was"
        f" sent after the transfer: {', '.join(bad[:10])}"
    )


def _write(session: SSHSession, path: str, text: str) -> None:
    """Write a small text file atomically with one command (stdin of the remote shell)."""
    q = shlex.quote
    _pipe(session, f"cat > {q(path)}.tmp && mv -f -- {q(path)}.tmp {q(path)}", [text.encode()])


def _remove(session: SSHSession, paths: list[str]) -> None:
    if paths:
        session.run("rm -rf -- " + " ".join(shlex.quote(p) for p in paths), check=True)
        paths.clear()


def _stream(
    session: SSHSession,
    local_dir: Path,
    names: Sequence[str],
    dest: str,
    progress: Callable[[int], None] | None,
) -> int:
    """Pipe `tar -cf -` of `names` into `tar -xf -` in `dest`; the bytes of the stream.

    The file list goes to tar as a file, not on its stdin: tar writes the archive while it reads
    the list, so a long list on a pipe would deadlock against its full stdout.
    """
    with tempfile.NamedTemporaryFile(prefix="oct-stage-", suffix=".list") as listing:
        listing.write(b"".join(name.encode() + b"\0" for name in names))
        listing.flush()
        tar = subprocess.Popen(
            ["tar", "-cf", "-", "-C", str(local_dir), "--null", "-T", listing.name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert tar.stdout is not None
            stdout = tar.stdout
            chunks = iter(lambda: stdout.read(STREAM_CHUNK), b"")
            q = shlex.quote
            command = f"mkdir -p -- {q(dest)} && tar -xf - -C {q(dest)}"
            sent = _pipe(session, command, chunks, progress)
        finally:
            if tar.poll() is None:
                tar.kill()
            tar.wait()
    if tar.returncode != 0:
        assert tar.stderr is not None
        raise OSError(f"local tar of {local_dir} failed: {tar.stderr.read().decode()[-500:]}")
    return sent


def _pipe(
    session: SSHSession,
    command: str,
    chunks: Iterable[bytes],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run `command` remotely with `chunks` as its stdin; raise unless it exits 0."""
    channel = session.start(command)
    sent = 0
    try:
        for chunk in chunks:
            channel.sendall(chunk)
            sent += len(chunk)
            if progress:
                progress(sent)
        channel.shutdown_write()
        result = session.finish(channel, command, session.settings.command_timeout_s)
    finally:
        channel.close()
    if not result.ok:
        raise ClusterCommandError(
            f"`{command}` on {session.settings.host} exited {result.exit_code}:"
            f" {result.stderr.strip()[-1000:]}",
            result,
        )
    return sent
