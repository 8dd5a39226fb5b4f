"""`new_images_sensor`: notices images added, removed or touched under the image root and
requests `raw_oct_images` and the assets after it, through `$OCT_REFRESH_THROUGH` (default
`reduced_sample`; training is opt-in because it is expensive). Off by default: it starts runs
whenever the image folder changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.assets.images import reduced_sample
from oct_assets.contracts.formats import SPLITS
from oct_assets.dataset.scan import tree_fingerprint
from oct_assets.paths import images_dir

REFRESH_ENV = "OCT_REFRESH_THROUGH"
# The local graph in order; the sensor refreshes a prefix of it.
REFRESH_CHAIN = tuple(a.key.to_user_string() for a in LOCAL_GRAPH)
DEFAULT_REFRESH_THROUGH = reduced_sample.key.to_user_string()


def refresh_selection() -> list[AssetKey]:
    """`raw_oct_images` through the asset named by `$OCT_REFRESH_THROUGH`, in graph order."""
    through = os.environ.get(REFRESH_ENV) or DEFAULT_REFRESH_THROUGH
    if through not in REFRESH_CHAIN:
        raise ValueError(
            f"{REFRESH_ENV}={through!r} is not an asset of the local graph; "
            f"choose one of {', '.join(REFRESH_CHAIN)}"
        )
    return [AssetKey(a) for a in REFRESH_CHAIN[: REFRESH_CHAIN.index(through) + 1]]


def stat_signature(root: Path) -> str:
    """Stat-only signature of every entry in `root/{train,test}/<folder>/`, cheaper to compute
    than the fingerprint: no name matching, formatting or sorting per file.

    Per folder it sums the entries' sizes, mtimes and name CRCs, so adding, removing, renaming
    or touching any file moves it. The sensor computes the full fingerprint only when it moves,
    which keeps an unchanged tick close to the cost of the `stat` calls themselves.
    """
    folders = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        with os.scandir(split_dir) as entries:
            labels = sorted(e.name for e in entries if e.is_dir())
        for label in labels:
            folders.append(f"{split}/{label}:{_folder_sums(split_dir / label)}")
    return hashlib.sha256("\n".join(folders).encode()).hexdigest()


def _folder_sums(folder: Path) -> str:
    count = size = mtime = names = 0
    stat, crc = os.stat, zlib.crc32
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            st = stat(name, dir_fd=fd)
            count += 1
            size += st.st_size
            mtime += st.st_mtime_ns
            names += crc(name.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    return f"{count},{size},{mtime},{names}"


def _cursor(root: Path, signature: str, fingerprint: str) -> str:
    return json.dumps({"root": str(root), "signature": signature, "fingerprint": fingerprint})


@sensor(
    name="new_images_sensor",
    target=AssetSelection.assets(*LOCAL_GRAPH),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description="Refreshes raw_oct_images and the assets after it, through "
    f"${REFRESH_ENV} (default {DEFAULT_REFRESH_THROUGH}), when images are added, removed or "
    "touched. Stat only: no image is opened.",
)
def new_images_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    """Request a refresh when the image tree's fingerprint differs from the last tick's."""
    root = images_dir()
    if not root.is_dir():
        return SkipReason(f"image root {root} does not exist (set OCT_IMAGES_DIR)")
    selection = refresh_selection()  # a bad $OCT_REFRESH_THROUGH fails every tick, by name
    previous = json.loads(context.cursor) if context.cursor else {}
    same_root = previous.get("root") == str(root)
    signature = stat_signature(root)
    if same_root and previous.get("signature") == signature:
        return SkipReason(f"no image added, removed or touched under {root}")
    fingerprint = tree_fingerprint(root)
    cursor = _cursor(root, signature, fingerprint)
    if same_root and previous.get("fingerprint") == fingerprint:
        return SensorResult(skip_reason=f"only non-image files changed under {root}", cursor=cursor)
    why = "first tick" if not previous else "images changed" if same_root else "new image root"
    context.log.info(f"{why} under {root}: refreshing {', '.join(k.path[-1] for k in selection)}")
    request = RunRequest(
        asset_selection=selection,
        tags={"oct/images_fingerprint": fingerprint[:16], "oct/reason": why},
    )
    return SensorResult(run_requests=[request], cursor=cursor)
