"""The inbox of new, unlabelled scans: any sub-folders, any file names, any kind of file.

Listing is stat only (`lstat`, never a read, so a FIFO or a device cannot hang it) and streams
in one order (the bytes of the relative path), so a listing of any size costs constant memory
and can be merged with the previous output's index. Hidden files and folders (a leading dot:
partial uploads, `.DS_Store`) are left out and counted, never silently; every other entry is a
scan to diagnose, and one that is not a regular file gets its reason instead.

Reading (`read_scan`) takes the file's bytes once, into memory, so the sha256 and the decode
name the same bytes. It opens each component beneath the inbox's descriptor with `O_NOFOLLOW`:
a symbolic link is followed only while its target stays inside the inbox, and only regular
files are read (`O_NONBLOCK` and `fstat` first: FIFOs, sockets and devices are refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Larger than any file the scan rule accepts (an uncompressed 4096x4096 RGB PNG is 48 MiB), so
# no scan is refused for its size, while one read never holds more than this.
MAX_SCAN_BYTES = 128 << 20
READ_TRIES = 3  # a file that changes while read is read again, then reported
MAX_LINKS = 40  # like the kernel's limit on links followed in one path

FILE, LINK, HIDDEN, OTHER = "file", "link", "hidden", "other"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class InboxEntry:
    """One entry of the inbox listing, from `lstat` (a link's own stat, not its target's).

    `rel` is the POSIX path relative to the inbox, as `os.fsdecode` gives it (bytes that are
    not UTF-8 are kept as surrogates, so the name is exact). `problem` is why an OTHER entry
    cannot be a scan (a FIFO, a folder that cannot be listed, ...).
    """

    rel: str
    kind: str  # FILE, LINK, HIDDEN or OTHER
    size: int = -1
    mtime_ns: int = -1
    ctime_ns: int = -1
    ino: int = -1
    dev: int = -1
    problem: str = ""

    def line(self) -> str:
        """The entry as one JSON line: what the fingerprint hashes and the spool holds."""
        fields = (self.rel, self.kind, self.size, self.mtime_ns, self.ctime_ns, self.ino)
        return json.dumps([*fields, self.dev, self.problem]) + "\n"

    @property
    def identity(self) -> str:
        """The file's identity for reuse without reading ("" if it must be read every time)."""
        return stat_identity(self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)


def stat_identity(dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """Same identity, same bytes: a write or a rename over the file changes the ctime, which a
    user cannot set, and a different file has another inode."""
    return f"{dev}:{ino}:{size}:{mtime_ns}:{ctime_ns}"


def name_key(rel: str) -> bytes:
    """The order of the listing (and of every file merged with it): the path's bytes."""
    return os.fsencode(rel)


def display_name(rel: str) -> str:
    """The name as valid UTF-8 text: bytes that are not UTF-8 become `\\xNN`; any valid name
    is unchanged."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def walk_inbox(root: Path) -> Iterator[InboxEntry]:
    """Every entry under `root`, in `name_key` order, hidden ones as HIDDEN (folders end in /).

    Folders are walked with an explicit stack (any depth); a link to a folder is an entry, not
    descended into; a folder that cannot be listed is an OTHER entry (`sub/`) with the reason.
    """
    stack = [iter(_children(Path(root), ""))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item[1], str):
            yield InboxEntry(item[0], OTHER, problem=item[1])
        else:
            rel, e = item
            is_dir = _is_dir(e)
            if e.name.startswith("."):
                yield InboxEntry(rel + "/" if is_dir else rel, HIDDEN)
            elif is_dir:
                stack.append(iter(_children(Path(e.path), rel + "/")))
            else:
                yield _entry(rel, e)


def _children(folder: Path, prefix: str) -> list[tuple[str, os.DirEntry | str]]:
    """A folder's entries sorted so the walk emits paths in byte order (a folder sorts as if
    its name ended in `/`, which is where its contents fall); for a sub-folder that cannot be
    listed, the reason instead. The inbox itself that cannot be listed raises."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as exc:
        if not prefix:
            raise
        return [(prefix, f"folder cannot be listed ({exc.strerror})")]
    keyed = [(name_key(prefix + e.name) + (b"/" if _is_dir(e) else b""), e) for e in entries]
    keyed.sort(key=lambda t: t[0])
    return [(prefix + e.name, e) for _, e in keyed]


def _is_dir(e: os.DirEntry) -> bool:
    try:
        return e.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _entry(rel: str, e: os.DirEntry) -> InboxEntry:
    try:
        st = e.stat(follow_symlinks=False)
    except OSError as exc:
        return InboxEntry(rel, OTHER, problem=f"cannot stat ({exc.strerror})")
    kind = FILE if stat.S_ISREG(st.st_mode) else LINK if stat.S_ISLNK(st.st_mode) else OTHER
    problem = "" if kind != OTHER else f"not a regular file ({file_kind(st.st_mode)})"
    return InboxEntry(
        rel, kind, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, problem
    )


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a link"),
    ]
    return next((word for test, word in kinds if test(mode)), f"file type {stat.S_IFMT(mode):o}")


def inbox_fingerprint(
    entries: Iterable[InboxEntry], sink: Callable[[str], object] | None = None
) -> tuple[str, int]:
    """Hash of every non-hidden entry's path, kind and stat identity, and their number: adding,
    removing, changing, touching or replacing a scan (even with the same size and mtime)
    moves it. Each entry's line (hidden ones too) also goes to `sink`, when given."""
    h, n = hashlib.sha256(), 0
    for e in entries:
        line = e.line()
        if sink is not None:
            sink(line)
        if e.kind != HIDDEN:
            h.update(line.encode())
            n += 1
    return h.hexdigest(), n


@dataclass
class Listing:
    """The inbox listed once, spooled to a temporary file: the salt and the build see the same
    entries, and memory does not grow with the inbox."""

    fingerprint: str
    n_files: int
    _spool: object

    def __iter__(self) -> Iterator[InboxEntry]:
        self._spool.seek(0)
        for line in self._spool:
            yield InboxEntry(*json.loads(line))


@contextlib.contextmanager
def listed_inbox(root: Path) -> Iterator[Listing]:
    """List `root` once (an absent root lists empty); iterate the result as often as needed."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        entries = walk_inbox(root) if Path(root).is_dir() else iter(())
        fingerprint, n = inbox_fingerprint(entries, sink=spool.write)
        spool.flush()
        yield Listing(fingerprint, n, spool)


@dataclass(frozen=True)
class ScanBytes:
    """A file read once: its bytes and their sha256, or the reason there are none.

    `identity` is the stat identity the bytes were read under, "" when it may not stand for
    them next time: a file whose ctime is not before `settled_before_ns` (a file system time
    taken when the run started) could change again within the same clock tick and keep its
    ctime, so the next run reads it again (git's "racily clean" entries).
    """

    data: bytes | None = None
    sha256: str = ""
    identity: str = ""
    reason: str | None = None


class _Refused(Exception):
    """A file that is not read, and why (the reason shown in its row)."""


def read_scan(root_fd: int, real_root: str, rel: str, settled_before_ns: int) -> ScanBytes:
    """Read the regular file at `rel` beneath the open inbox folder `root_fd` (whose resolved
    path is `real_root`), following links only inside it."""
    return _read(lambda: _open_beneath(root_fd, real_root, rel), settled_before_ns)


def read_scan_file(path: Path) -> ScanBytes:
    """Read a file named by a person (`python -m oct_assets predict`): links are followed, but
    only a regular file is read, and only once."""

    def opener() -> int:
        try:
            fd = os.open(path, _READ_FLAGS & ~os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise _Refused("missing (no such file)") from exc
        return _regular(fd)

    return _read(opener, 0)


def _read(opener: Callable[[], int], settled_before_ns: int) -> ScanBytes:
    """Open, fstat, read, fstat: bytes whose stat did not change while they were read."""
    for _ in range(READ_TRIES):
        try:
            fd = opener()
            try:
                before = os.fstat(fd)
                if before.st_size > MAX_SCAN_BYTES:
                    raise _Refused(_too_large(before.st_size))
                data = _read_fd(fd, MAX_SCAN_BYTES + 1)
                after = os.fstat(fd)
            finally:
                os.close(fd)
        except _Refused as exc:
            return ScanBytes(reason=str(exc))
        except OSError as exc:
            return ScanBytes(reason=f"unreadable ({exc.strerror or exc})")
        if len(data) > MAX_SCAN_BYTES:
            return ScanBytes(reason=_too_large(len(data)))
        same = (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        )
        if same and len(data) == after.st_size:
            settled = after.st_ctime_ns < settled_before_ns
            ident = stat_identity(
                after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns
            )
            sha = hashlib.sha256(data).hexdigest()
            return ScanBytes(data, sha, ident if settled else "")
    return ScanBytes(reason=f"changed while being read ({READ_TRIES} tries)")


def _too_large(size: int) -> str:
    return f"too large ({size} bytes; a scan is at most {MAX_SCAN_BYTES} bytes)"


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, n = [], 0
    while n < limit:
        chunk = os.read(fd, min(1 << 20, limit - n))
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)


def _regular(fd: int) -> int:
    """`fd` if it is a regular file, else close it and refuse (the open did not block: O_NONBLOCK
    makes opening a FIFO return at once)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _Refused(f"not a regular file ({file_kind(mode)})")
    return fd


def _open_beneath(root_fd: int, real_root: str, rel: str) -> int:
    """Open `rel` under `root_fd` one component at a time with O_NOFOLLOW, resolving links
    ourselves so that none leads out of the inbox (like openat2's RESOLVE_BENEATH)."""
    todo = rel.split("/")
    opened: list[int] = []  # folder descriptors below the root, innermost last
    links = 0
    try:
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not opened:
                    raise _Refused("unreadable (a link out of the inbox)")
                os.close(opened.pop())
                continue
            here = opened[-1] if opened else root_fd
            try:
                st = os.stat(part, dir_fd=here, follow_symlinks=False)
            except FileNotFoundError as exc:
                why = "a dangling link" if links else "deleted since the listing"
                raise _Refused(f"unreadable ({why})") from exc
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise _Refused("unreadable (too many levels of links)")
                target = os.readlink(part, dir_fd=here)
                if target.startswith("/"):
                    if target != real_root and not target.startswith(real_root.rstrip("/") + "/"):
                        raise _Refused("unreadable (a link out of the inbox)")
                    target = target[len(real_root) :]
                    while opened:
                        os.close(opened.pop())
                todo = target.split("/") + todo
                continue
            if todo:  # a folder on the way
                if not stat.S_ISDIR(st.st_mode):
                    raise _Refused("unreadable (a path through a file)")
                opened.append(os.open(part, _DIR_FLAGS, dir_fd=here))
                continue
            if not stat.S_ISREG(st.st_mode):  # refused before it is opened: no side effects
                raise _Refused(f"not a regular file ({file_kind(st.st_mode)})")
            return _regular(os.open(part, _READ_FLAGS, dir_fd=here))
        raise _Refused("not a regular file (a folder)")
    finally:
        for fd in opened:
            os.close(fd)
