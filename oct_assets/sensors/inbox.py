"""`inbox_sensor`: notices scans added, removed, changed, touched or replaced in the inbox (stat
only, streamed: no file is opened, memory does not grow with the inbox) or a new champion, and
requests `inbox_predictions`. Off by default: it starts runs whenever the inbox changes."""

from __future__ import annotations

import json

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from oct_assets.assets.inbox import inbox_predictions
from oct_assets.contracts.assets import CHAMPION_MODEL
from oct_assets.dataset.inbox import inbox_fingerprint, walk_inbox
from oct_assets.paths import data_dir, inbox_dir
from oct_assets.serving.champion import read_current


@sensor(
    name="inbox_sensor",
    target=AssetSelection.assets(inbox_predictions),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description="Requests inbox_predictions when scans are added, removed, changed or touched "
    "under $OCT_INBOX_DIR (default $OCT_DATA_DIR/inbox), or when the champion changes. "
    "Stat only: no scan is opened.",
)
def inbox_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    root = inbox_dir()
    if not root.is_dir():
        return SkipReason(f"inbox {root} does not exist (set OCT_INBOX_DIR)")
    current = read_current(data_dir() / CHAMPION_MODEL)
    if current is None:
        return SkipReason("no champion yet: materialise champion_model first")
    champion = current[0].name
    fingerprint, n_files = inbox_fingerprint(walk_inbox(root))
    state = {"root": str(root), "fingerprint": fingerprint, "champion": champion}
    previous = json.loads(context.cursor) if context.cursor else {}
    if previous == state:
        return SkipReason(f"no scan added, removed or touched under {root}; same champion")
    if not n_files:
        return SensorResult(skip_reason=f"inbox {root} is empty", cursor=json.dumps(state))
    why = (
        "first tick"
        if not previous
        else "new champion"
        if previous.get("champion") != champion
        else "inbox changed"
    )
    request = RunRequest(
        asset_selection=[inbox_predictions.key],
        tags={"oct/inbox_fingerprint": state["fingerprint"][:16], "oct/reason": why},
    )
    return SensorResult(run_requests=[request], cursor=json.dumps(state))
