"""An IO manager that remembers the latest salted folder of each asset under `$OCT_DATA_DIR`.

The outputs themselves are already on disk in their salted folders; only the pointer to the
latest one is stored, in `<data_dir>/<asset>/latest.json`. Keeping it beside the data rather
than in `DAGSTER_HOME` lets runs in separate processes, with or without a persistent
instance, pick up each other's results.
"""

from __future__ import annotations

import json
from pathlib import Path

from dagster import ConfigurableIOManager, InputContext, OutputContext

from oct_assets.paths import data_dir
from oct_assets.store.artifact import Artifact
from oct_assets.store.publish import write_json_atomic
from oct_assets.store.salt import is_complete

POINTER_NAME = "latest.json"


class LatestArtifactIOManager(ConfigurableIOManager):
    """Stores an `Artifact` as a pointer file; loads it back, checking the folder is complete."""

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        pointer = data_dir() / obj.asset / POINTER_NAME
        pointer.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(pointer, {"asset": obj.asset, "salt": obj.salt, "path": str(obj.path)})

    def load_input(self, context: InputContext) -> Artifact:
        asset = context.asset_key.path[-1]
        pointer = data_dir() / asset / POINTER_NAME
        if not pointer.is_file():
            raise FileNotFoundError(
                f"{asset} has not been materialised under OCT_DATA_DIR={data_dir()} "
                f"(no {pointer}); materialise it first, e.g. "
                f"`dagster asset materialize -m oct_assets.definitions --select {asset}`"
            )
        info = json.loads(pointer.read_text())
        artifact = Artifact(asset=info["asset"], salt=info["salt"], path=Path(info["path"]))
        if not is_complete(artifact.path):
            raise FileNotFoundError(
                f"the latest {asset} output {artifact.path} is missing or incomplete; "
                f"materialise {asset} again"
            )
        return artifact
