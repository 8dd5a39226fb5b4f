"""The inbox of new, unlabelled scans: any sub-folders, any file names. Stat only, no decode.

Hidden files and folders (a leading dot: partial uploads, `.DS_Store`) are left out and
counted, never silently; every other file is a scan to diagnose, whatever its name.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InboxEntry:
    """One file of the inbox; `size` is -1 when it cannot be stat'ed (e.g. a dangling link)."""

    rel: str  # POSIX path relative to the inbox
    size: int
    mtime_ns: int


def scan_inbox(root: Path) -> tuple[list[InboxEntry], list[str]]:
    """Every file under `root` (sorted by relative path) and the hidden ones left out."""
    entries: list[InboxEntry] = []
    hidden: list[str] = []
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        hidden += [(base / d).as_posix() + "/" for d in dirs if d.startswith(".")]
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            rel = (base / name).as_posix()
            if name.startswith("."):
                hidden.append(rel)
                continue
            try:
                st = os.stat(Path(folder) / name)
                entries.append(InboxEntry(rel, st.st_size, st.st_mtime_ns))
            except OSError:
                st = os.lstat(Path(folder) / name)
                entries.append(InboxEntry(rel, -1, st.st_mtime_ns))
    entries.sort(key=lambda e: e.rel)
    return entries, sorted(hidden)


def inbox_fingerprint(entries: list[InboxEntry]) -> str:
    """Hash of every entry's path, size and mtime: adding, removing, changing or touching a scan
    moves it."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.rel}\t{e.size}\t{e.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """The content hash that decides whether a scan was already scored."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
