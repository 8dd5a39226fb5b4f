"""Two nodes filling one decode cache on a shared file system at the same time.

Each node's local rank 0 fills the cache (`loop.py`), and the cluster's `cache/` lies on the
shared file system, so on two nodes both fill the same cache file at once. That is correct by
construction (each writes its own locked temporary file, the renames are atomic and carry the
same bytes, a reader's open file keeps its inode); this proves it with two processes held
inside their fills together.
"""

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np

from oct_assets.ml import cache
from oct_assets.ml.cache import cache_key, decoded_images
from oct_assets.ml.data import read_sample

SIZE, FIT = 16, "resize"


def _fill_as_a_node(sample_dir: str, cache_dir: str, barrier, result: str) -> None:
    """Child: fill the cache, waiting inside the fill until the other child is filling too."""
    original = cache._fill

    def together(*args, **kwargs):
        barrier.wait(timeout=60)  # both are past the "is it there?" check, neither has renamed
        original(*args, **kwargs)

    cache._fill = together
    sample = read_sample(Path(sample_dir))
    images = decoded_images(sample, SIZE, FIT, Path(cache_dir), workers=1)
    digest = hashlib.sha256(images.read(np.arange(len(images))).tobytes()).hexdigest()
    Path(result).write_text(digest)


def test_two_fillers_of_one_shared_cache_both_end_with_the_right_bytes(
    tiny_sample, tmp_path, monkeypatch
):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    shared = tmp_path / "shared-cache"
    children = [
        ctx.Process(
            target=_fill_as_a_node,
            args=(str(tiny_sample), str(shared), barrier, str(tmp_path / f"node{i}.sha256")),
        )
        for i in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0]

    sample = read_sample(tiny_sample)
    alone = decoded_images(sample, SIZE, FIT, tmp_path / "alone", workers=1)
    expected = hashlib.sha256(alone.read(np.arange(len(alone))).tobytes()).hexdigest()
    assert [(tmp_path / f"node{i}.sha256").read_text() for i in range(2)] == [expected] * 2
    key = cache_key(sample.salt, SIZE, FIT)
    assert sorted(p.name for p in shared.iterdir()) == [f"{key}.json", f"{key}.u8"]
    assert (shared / f"{key}.u8").read_bytes() == (tmp_path / "alone" / f"{key}.u8").read_bytes()

    def no_fill(*args, **kwargs):
        raise AssertionError("a complete shared cache was filled again")

    monkeypatch.setattr(cache, "_fill", no_fill)
    warm = decoded_images(sample, SIZE, FIT, shared, workers=1)  # the index matches: reused
    assert hashlib.sha256(warm.read(np.arange(len(warm))).tobytes()).hexdigest() == expected
