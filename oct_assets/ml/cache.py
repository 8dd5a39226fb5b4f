"""Decode every image of a sample once into a uint8 file; later epochs and runs read only that.

Layout: `<cache_dir>/<salt>-<fit><size>-v<decoder version>.u8` holds `n * size * size` bytes,
row i being images.csv row i as a grayscale square; the `.json` of the same stem is the index,
written atomically after the data file is in place, so its presence proves the data file is
complete.
Batches are read with `os.pread` rather than through a memmap so that resident memory stays
flat however large the sample grows (the page cache still serves repeated epochs).

A fill writes `.<key>.<pid>.<random>.u8.tmp` (and its `.claims/` folder) while holding an
flock on it; the lock dies with the filler, however it dies, so the next fill removes the
unlocked ones (a pid check would misjudge fillers in another PID namespace or on another
node). Decode workers are killed by the kernel when the filler dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from oct_assets.contracts.files import abandoned, write_bytes
from oct_assets.contracts.lifetime import die_with_parent
from oct_assets.ml.data import Sample
from oct_assets.ml.decode import DECODE_VERSION, decode_gray

log = logging.getLogger(__name__)

CHUNK = 32  # images per task: large enough to amortise IPC, small enough to balance
TMP_SUFFIX = ".u8.tmp"  # a fill in progress (or a dead one, when nobody holds its flock)


def usable_cpus() -> int:
    """Cores this process may run on (a Slurm or container CPU set), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_cache_dir(sample_dir: Path) -> Path:
    """`<sample_dir>/../../cache`: beside the asset folders for samples at data/<asset>/<salt>."""
    return Path(sample_dir).resolve().parent.parent / "cache"


def _decode_into(target: str, rows: list[int], paths: list[str], size: int, fit: str) -> int:
    """Decode rows and pwrite them into `target` at their offsets."""
    fd = os.open(target, os.O_WRONLY)
    try:
        for row, path in zip(rows, paths, strict=True):
            os.pwrite(fd, decode_gray(Path(path), size, fit).tobytes(), row * size * size)
    finally:
        os.close(fd)
    return len(rows)


def sweep_dead_fills(cache_dir: Path) -> list[Path]:
    """Remove the temp files and claim folders of fills whose process has died; return them.

    A live filler holds an exclusive flock on its temp file, so a lock that can be taken
    here proves the filler is gone. A claims folder without its temp file is always dead.
    """
    removed = []
    for tmp in sorted(Path(cache_dir).glob(f".*{TMP_SUFFIX}")):
        with abandoned(tmp) as dead:
            if dead:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    for claims in sorted(Path(cache_dir).glob(f".*{TMP_SUFFIX}.claims")):
        if not claims.with_suffix("").exists():
            shutil.rmtree(claims, ignore_errors=True)
            removed.append(claims)
    if removed:
        log.info("removed %d leftovers of dead decode cache fills in %s", len(removed), cache_dir)
    return removed


def _locked_temp(cache_dir: Path, key: str, size: int) -> tuple[Path, int]:
    """A new, empty temp file of `size` bytes, flocked by the returned fd.

    Created under a name the sweep ignores and renamed once locked, so no sweep can take it
    for dead in between.
    """
    stem = cache_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    new, tmp = stem.with_name(stem.name + ".u8.new"), stem.with_name(stem.name + TMP_SUFFIX)
    fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, size)
        os.replace(new, tmp)
    except BaseException:
        os.close(fd)
        new.unlink(missing_ok=True)
        raise
    return tmp, fd


def _claim(claims: str, k: int) -> bool:
    """Take chunk k unless another process has: an O_EXCL marker file is an atomic claim.

    Files rather than a shared-memory lock, so that a worker still starting up after the
    fill has finished (and removed `claims`) just finds nothing to do.
    """
    try:
        os.close(os.open(os.path.join(claims, str(k)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except (FileExistsError, FileNotFoundError):
        return False
    return True


def _decode_chunk(
    target: str, claims: str, k: int, rows: list[int], paths: list[str], size: int, fit: str
) -> bool:
    """Worker task (top level, so spawned processes can import it): chunk k, if still free."""
    if not _claim(claims, k):
        return False
    _decode_into(target, rows, paths, size, fit)
    return True


class DecodedImages:
    """Read-only view of a filled cache: `read(rows)` returns uint8 (len(rows), size, size)."""

    def __init__(self, data_path: Path, n: int, size: int) -> None:
        self.path, self.n, self.size = Path(data_path), n, size
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.n

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        stride = self.size * self.size
        out = np.empty((len(rows), self.size, self.size), dtype=np.uint8)
        flat = out.reshape(len(rows), stride)
        for k, row in enumerate(np.asarray(rows, dtype=np.int64)):
            if not 0 <= row < self.n:
                raise IndexError(f"row {row} outside cache of {self.n} images")
            flat[k] = np.frombuffer(os.pread(self._fd, stride, int(row) * stride), np.uint8)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "n": self.n, "size": self.size, "_fd": None}


def cache_key(salt: str, size: int, fit: str) -> str:
    """File stem of a cache: the sample's salt, the fit, the size and the decoder's version."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", salt)
    return f"{safe}-{fit}{size}-v{DECODE_VERSION}"


def decoded_images(
    sample: Sample, size: int, fit: str, cache_dir: Path | None = None, workers: int = 0
) -> DecodedImages:
    """Return the sample's decode cache at this size, filling it first if it is absent.

    Args:
        sample: the sample; its salt and row fingerprint key the cache.
        size: square side in pixels.
        fit: how a scan becomes a square (see `oct_assets.ml.decode.decode_gray`).
        cache_dir: where caches live; None means `default_cache_dir(sample.root)`.
        workers: decode processes; 0 means one per usable core, 1 decodes in this process.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(sample.root)
    key = cache_key(sample.salt, size, fit)
    data_path, index_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    fingerprint = sample.fingerprint()
    if index_path.is_file() and data_path.is_file():
        index = json.loads(index_path.read_text())
        if (
            index.get("fingerprint") == fingerprint
            and index.get("n") == len(sample)
            and data_path.stat().st_size == len(sample) * size * size
        ):
            return DecodedImages(data_path, len(sample), size)
        log.warning("decode cache %s does not match the sample; rebuilding", index_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    sweep_dead_fills(cache_dir)
    started = time.perf_counter()
    tmp, fd = _locked_temp(cache_dir, key, len(sample) * size * size)
    try:
        _fill(tmp, sample, size, fit, workers)
        os.fsync(fd)
        os.replace(tmp, data_path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # releases the lock, after the rename
    seconds = time.perf_counter() - started
    index = {
        "fingerprint": fingerprint,
        "n": len(sample),
        "size": size,
        "fit": fit,
        "salt": sample.salt,
        "decode_seconds": round(seconds, 3),
    }
    write_bytes(index_path, json.dumps(index, indent=2).encode())
    log.info("decoded %d images at %dpx into %s in %.1fs", len(sample), size, data_path, seconds)
    return DecodedImages(data_path, len(sample), size)


def _fill(target: Path, sample: Sample, size: int, fit: str, workers: int) -> None:
    """Decode every row into `target`, with `workers` processes in all (this one included).

    Every chunk is queued to workers - 1 spawned processes, and this process meanwhile takes
    chunks from the back. A chunk goes to whoever claims it first (marker files), so this
    process never waits for a worker that is still starting up (~0.2 s, more when the
    caller's __main__ is heavy to re-import), and small samples are not slowed by the pool.
    """
    n = len(sample)
    workers = workers or usable_cpus()
    chunks = [list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]
    paths = [[str(sample.path(r)) for r in rows] for rows in chunks]

    def decode(k: int) -> int:
        return _decode_into(str(target), chunks[k], paths[k], size, fit)

    if workers == 1 or len(chunks) == 1:
        for k in range(len(chunks)):
            decode(k)
        return
    # spawn: never fork a process whose torch/OpenMP threads may hold locks. Each worker dies
    # with the filler, and at once when the filler is already gone.
    ctx = multiprocessing.get_context("spawn")
    claims = Path(f"{target}.claims")
    claims.mkdir()
    pool = ProcessPoolExecutor(
        min(workers - 1, len(chunks) - 1), ctx, die_with_parent, (os.getpid(),)
    )
    try:
        futures = [
            pool.submit(_decode_chunk, str(target), str(claims), k, rows, paths[k], size, fit)
            for k, rows in enumerate(chunks)
        ]
        mine = set()
        for k in reversed(range(len(chunks))):
            if _claim(str(claims), k):
                decode(k)
                mine.add(k)
        broken = False
        for k, future in enumerate(futures):
            if k in mine:
                continue  # its future finds the chunk taken, whenever a worker gets to it
            try:
                future.result()  # re-raises ImageDecodeError naming the path
            except BrokenProcessPool:
                # A worker died, e.g. the caller's __main__ cannot be re-imported (as for
                # `python - < script`): decode its chunk here rather than fail.
                if not broken:
                    log.warning("decode workers died; decoding the rest in this process")
                broken = True
                decode(k)
    finally:
        # Every chunk is written; workers still starting find nothing left and exit.
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(claims, ignore_errors=True)
