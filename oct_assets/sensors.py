"""Sensors and declarative automation: what refreshes by itself, and when.

- `new_images_sensor` notices images added, removed or touched under the image root and
  requests `raw_oct_images` and the assets after it, through `$OCT_REFRESH_THROUGH` (default
  `reduced_sample`; training is opt-in because it is expensive).
- `after_new_model(model)` is the automation condition of a predictions asset: it evaluates a
  model once that model has a new materialisation, never a stale model on a new sample.
  `automation_sensor` evaluates such conditions and is on by default; `new_images_sensor` is
  off until someone turns it on, because it starts runs whenever the image folder changes.
- `cluster_model_sensor` notices a new model on the cluster (`$OCT_CLUSTER_MODEL_PATH`) and
  requests `cluster_model` (fetch) and `cluster_predictions`; off by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import zlib
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from oct_assets.assets.cluster import MODEL_FILES, model_content_hash
from oct_assets.constants import SPLITS, images_dir
from oct_assets.resources.cluster import (
    ClusterAuthError,
    ClusterConfigError,
    ClusterConnectionError,
    ClusterError,
    ClusterHostKeyError,
    ClusterResource,
    RemoteFileNotFoundError,
)
from oct_assets.scan import tree_fingerprint

REFRESH_ENV = "OCT_REFRESH_THROUGH"
# The local graph in order; the sensor refreshes a prefix of it.
REFRESH_CHAIN = (
    "raw_oct_images",
    "reduced_sample",
    "trained_model",
    "predictions",
)
DEFAULT_REFRESH_THROUGH = "reduced_sample"


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
    target=AssetSelection.assets(*REFRESH_CHAIN),
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


def after_new_model(model: str) -> AutomationCondition:
    """Eager on `model` only: run when the model has a new materialisation (or when this asset
    is newly missing), not when `reduced_sample` alone changes.

    A new sample with an old model would score that model on a test split it may have trained
    on; the model's own rebuild brings the new sample with it.
    """
    deps_updated = AutomationCondition.any_deps_updated()
    only_model = deps_updated.allow(AssetSelection.assets(model)).with_label(f"{model} updated")
    eager = AutomationCondition.eager().replace("any_deps_updated", only_model)
    return eager.with_label(f"eager after {model}")


automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: predictions after a new model.",
)


CLUSTER_MODEL_PATH_ENV = "OCT_CLUSTER_MODEL_PATH"
DEFAULT_CLUSTER_MODEL_PATH = "models/latest"  # cluster_model's default remote_model_path
CLUSTER_ASSETS = ("cluster_model", "cluster_predictions")
# Connect and hash within one tick: the daemon gives a sensor 60 s by default.
CLUSTER_PROBE_TIMEOUT_S = 40.0


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@sensor(
    name="cluster_model_sensor",
    target=AssetSelection.assets(*CLUSTER_ASSETS),
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Fetches the cluster's model into cluster_model and evaluates it in "
    f"cluster_predictions when model.pt or model.json under ${CLUSTER_MODEL_PATH_ENV} (default "
    f"{DEFAULT_CLUSTER_MODEL_PATH}, relative to OCT_CLUSTER_REMOTE_DIR) changes content. "
    "One SSH command per tick.",
)
def cluster_model_sensor(
    context: SensorEvaluationContext, cluster: ClusterResource
) -> SensorResult | SkipReason:
    """Request a fetch when the remote model's content hash differs from the cursor.

    Every cluster problem (settings missing, host unreachable, authentication, host key, no model
    yet) becomes a one-line skip reason; the tick tries once, and the next tick is the retry.
    """
    path = os.environ.get(CLUSTER_MODEL_PATH_ENV) or DEFAULT_CLUSTER_MODEL_PATH
    try:
        with cluster.single_attempt():
            files = cluster.file_digests(path, MODEL_FILES, timeout=CLUSTER_PROBE_TIMEOUT_S)
    except ClusterConfigError as exc:
        return SkipReason(_one_line(str(exc)))
    except ClusterConnectionError as exc:
        cause = exc.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        return SkipReason(_one_line(f"cluster {cluster.settings().target} unreachable: {why}"))
    except (ClusterAuthError, ClusterHostKeyError) as exc:
        # The first sentence names the host and the problem; a run's error adds how to fix it.
        return SkipReason(_one_line(str(exc).split(". ")[0]))
    except RemoteFileNotFoundError as exc:
        return SkipReason(_one_line(f"no model on the cluster yet: {exc}"))
    except ClusterError as exc:
        return SkipReason(_one_line(f"cannot read the cluster model at {path}: {exc}"))
    content = model_content_hash({name: f.sha256 for name, f in files.items()})
    where = posixpath.dirname(files[MODEL_FILES[0]].path)
    if content == context.cursor:
        return SkipReason(f"cluster model {where} unchanged (content {content[:16]})")
    sizes = ", ".join(
        f"{name} {f.size} bytes, mtime {datetime.fromtimestamp(f.mtime, UTC):%Y-%m-%dT%H:%M:%SZ}"
        for name, f in files.items()
    )
    why = "first tick" if context.cursor is None else "new model"
    context.log.info(f"{why} at {where} ({sizes}; content {content[:16]}): fetching it")
    request = RunRequest(
        run_key=content,
        asset_selection=[AssetKey(a) for a in CLUSTER_ASSETS],
        run_config={
            "ops": {"cluster_model": {"config": {"mode": "fetch", "remote_model_path": path}}}
        },
        tags={"oct/model_content": content[:16], "oct/reason": why},
    )
    return SensorResult(run_requests=[request], cursor=content)
