"""A killed cache fill leaves no processes behind, and the next fill sweeps its files."""

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from oct_assets.ml.cache import cache_key, decoded_images, sweep_dead_fills
from oct_assets.ml.data import read_sample
from oct_assets_tests.fixtures_ml import CLASSES, REPO


def slow_sample(dest: Path, n: int = 4000, distinct: int = 16) -> Path:
    """`n` rows of full-size noise scans (symlinks to `distinct` files): a fill of seconds."""
    rng = np.random.default_rng(0)
    (dest / "scans").mkdir(parents=True)
    for k in range(distinct):
        noise = rng.integers(0, 256, size=(496, 512), dtype=np.uint8)
        Image.fromarray(noise).save(dest / "scans" / f"{k}.jpeg", quality=95)
    rows = []
    for i in range(n):
        name = CLASSES[i % len(CLASSES)]
        rel = f"train/{name}/{name}-{1000 + i // 2}-{i}.jpeg"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(dest / "scans" / f"{i % distinct}.jpeg", dest / rel)
        rows.append((rel, "train", name, str(1000 + i // 2)))
    with open(dest / "images.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "split", "label", "patient"), *rows])
    (dest / "manifest.json").write_text(json.dumps({"salt": "slow", "classes": list(CLASSES)}))
    return dest


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every living descendant of `pid`, read from /proc."""
    parent_of, started = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] != "Z":
                parent_of[int(entry.name)], started[int(entry.name)] = int(stat[1]), stat[19]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier}
        found |= {(p, started[p]) for p in frontier}
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Those of `processes` still running (a zombie or a reused pid does not count)."""
    out = set()
    for pid, start in processes:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and stat[19] == start:
            out.add((pid, start))
    return out


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigkilled_fill_leaves_no_process_and_next_fill_sweeps(tmp_path, tiny_sample):
    sample, cache = slow_sample(tmp_path / "sample"), tmp_path / "cache"
    config = {"image_size": 224, "decode_workers": 3, "epochs": 1, "threads": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    args = ["--sample", sample, "--out", tmp_path / "m", "--config", tmp_path / "config.json"]
    trainer = subprocess.Popen(
        [sys.executable, "-m", "oct_assets.ml.train", *map(str, args), "--cache-dir", str(cache)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        # Mid-fill: a worker has claimed the first chunk (the trainer decodes from the back).
        wait_for(lambda: list(cache.glob(".*.u8.tmp.claims/0")), 120, "a worker's first claim")
        children = descendants(trainer.pid)
        assert len(children) >= 3  # two decode workers and the resource tracker
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        trainer.stderr.close()
    wait_for(lambda: not alive(children), 10, f"children {alive(children)} to die")
    key = cache_key(read_sample(sample).salt, 224, "resize")
    assert not (cache / f"{key}.u8").exists()
    leftovers = sorted(p.name for p in cache.iterdir())
    assert any(n.endswith(".u8.tmp") for n in leftovers), leftovers

    decoded_images(read_sample(tiny_sample), 16, "resize", cache, workers=1)  # the next fill
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{cache_key('tiny', 16, 'resize')}.json",
        f"{cache_key('tiny', 16, 'resize')}.u8",
    ]


def test_sweep_spares_a_fill_in_progress(tmp_path):
    live, dead = tmp_path / ".a.1.0.u8.tmp", tmp_path / ".b.2.0.u8.tmp"
    (tmp_path / ".b.2.0.u8.tmp.claims").mkdir()
    for p in (live, dead):
        p.write_bytes(b"")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the live filler does for its whole fill
        assert sweep_dead_fills(tmp_path) == [dead, tmp_path / ".b.2.0.u8.tmp.claims"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
