"""Helpers shared by the benchmark scripts: side-by-side timing, synthetic trees and the
baseline decode."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from oct_assets.contracts.formats import CLASSES


def alternate(runs: int, **candidates: Callable[[], object]) -> dict[str, list[float]]:
    """Time each candidate `runs` times, interleaved, so drift on a noisy machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def report(times: dict[str, list[float]], baseline: str, goal: str) -> float:
    """Print medians and the ratio of the first candidate to `baseline`; return that ratio."""
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in medians.items():
        spread = f"min {min(times[name]):.4f}s max {max(times[name]):.4f}s"
        print(f"{name:>24}: median {m:.4f}s ({spread}, n={len(times[name])})")
    subject = next(n for n in medians if n != baseline)
    ratio = medians[subject] / medians[baseline]
    print(f"ratio {subject} / {baseline} = {ratio:.3f}  (goal: {goal})")
    return ratio


def decode_rgb_float(path: Path, size: int) -> np.ndarray:
    """The baseline data path of the benchmarks (the seed's, every epoch): a full JPEG decode
    to RGB, resized, float32 CHW in [0, 1]. The ML core decodes once, in draft mode
    (`ml.decode.decode_gray`)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def make_tiny_tree(root: Path, n_files: int) -> Path:
    """An OCT2017-layout tree of `n_files` tiny files (names valid, content irrelevant to stat)."""
    if root.exists():
        return root
    per_folder = max(1, n_files // (2 * len(CLASSES)))
    for split in ("train", "test"):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"{label}-{1000000 + i // 3}-{i % 3 + 1}.jpeg").write_bytes(b"x")
    return root
