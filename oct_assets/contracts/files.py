"""File-system machinery written once: atomic writes (a path either does not exist or holds
complete content), JSON read back with the file named, flock locks that die with their holder,
the sweep of what dead holders left, and sha256 of a file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oct_assets.contracts.errors import DamagedFileError


def write_bytes(path: Path, data: bytes) -> None:
    """Write a unique temp sibling, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    """A JSON file this project wrote, or a `DamagedFileError` naming it (a bare JSONDecodeError
    says neither which file nor what to do)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DamagedFileError(f"{path} is damaged (not UTF-8 text: {exc})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DamagedFileError(f"{path} is damaged (not JSON: {exc})") from exc


def fsync_path(path: Path) -> None:
    """Flush a written file, or a folder's entries, to disk, so that a rename cannot publish
    an empty file or folder after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary sibling, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    fsync_path(tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[bool]:
    """Hold an exclusive `flock` on `lock_file` (created if need be); the kernel drops it when
    the holder dies, kill -9 included. Yields True when another holder had it first.

    The lock file stays: removing it would let a newcomer lock a fresh file while a waiter
    still holds the old one.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield waited
    finally:
        os.close(fd)


@contextlib.contextmanager
def abandoned(path: Path) -> Iterator[bool]:
    """Whether nobody holds the `flock` of `path` (a file or folder whose holder locks it for
    as long as it works on it): True while this process holds that lock instead (the holder
    died, kill -9 included: remove `path` inside the block), False when a live holder has it
    or `path` is gone.

    Liveness is the kernel's lock, never a pid: right across PID namespaces and containers,
    and across hosts on a shared file system that supports `flock`.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False  # finished, published or swept meanwhile
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False  # its holder is alive
        yield taken
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
