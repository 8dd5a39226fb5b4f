"""`cluster_model_sensor`: notices a new model on the cluster (`$OCT_CLUSTER_MODEL_PATH`) and
requests `cluster_model` (fetch) and `cluster_predictions`; off by default."""

from __future__ import annotations

import os
import posixpath
from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from oct_assets.assets.cluster import cluster_model
from oct_assets.assets.graph import CLUSTER_BRANCH
from oct_assets.cluster.errors import (
    ClusterAuthError,
    ClusterConfigError,
    ClusterConnectionError,
    ClusterError,
    ClusterHostKeyError,
    RemoteFileNotFoundError,
)
from oct_assets.cluster.layout import LATEST_MODEL
from oct_assets.cluster.models import model_content_hash
from oct_assets.contracts.formats import MODEL_FILES
from oct_assets.resources.cluster import ClusterResource

CLUSTER_MODEL_PATH_ENV = "OCT_CLUSTER_MODEL_PATH"
DEFAULT_CLUSTER_MODEL_PATH = LATEST_MODEL  # cluster_model's default remote_model_path
# Connect and hash within one tick: the daemon gives a sensor 60 s by default.
CLUSTER_PROBE_TIMEOUT_S = 40.0


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@sensor(
    name="cluster_model_sensor",
    target=AssetSelection.assets(*CLUSTER_BRANCH),
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
        with cluster.session.single_attempt():
            files = cluster.session.file_digests(path, MODEL_FILES, timeout=CLUSTER_PROBE_TIMEOUT_S)
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
        asset_selection=[a.key for a in CLUSTER_BRANCH],
        run_config={
            "ops": {
                cluster_model.key.to_user_string(): {
                    "config": {"mode": "fetch", "remote_model_path": path}
                }
            }
        },
        tags={"oct/model_content": content[:16], "oct/reason": why},
    )
    return SensorResult(run_requests=[request], cursor=content)
