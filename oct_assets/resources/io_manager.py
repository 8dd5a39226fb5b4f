"""The IO manager: which salted folder of an upstream asset a step reads.

The outputs are already on disk in their salted folders; an input only needs the right salt,
and the folder is always `<data_dir>/<asset>/<salt>/` under this run's data folder. Which salt,
in this order:

1. the upstream was materialised in this run: the salt this run recorded (Dagster's event log);
2. else the latest materialisation of the upstream recorded before this run started (event log);
3. else, when this Dagster instance has never materialised it (a fresh shell without
   `DAGSTER_HOME`), `<data_dir>/<asset>/latest.json`, which names the latest salt written by any
   run on this data folder. It holds the salt only, so a copied data folder reads its own files.

"Before this run started" is a timestamp, the run's first event's: storage ids are not
comparable across storages (SQLite's default event log keeps one database per run, so a run's
ids start again at 1). An instance that has materialised the upstream, but only after this run
started, is an error, never a reason to read the pointer another instance may have moved.

So two runs sharing a data folder never read each other's outputs through the event log; only
the pointer, the fallback for an instance with no history, follows the data folder.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    DagsterEventType,
    DagsterInstance,
    InitResourceContext,
    InputContext,
    OutputContext,
)

from oct_assets.contracts.errors import DamagedFileError
from oct_assets.contracts.files import write_json_atomic
from oct_assets.contracts.manifest import pointer_salt as read_pointer_salt
from oct_assets.paths import data_dir
from oct_assets.resources.run_liveness import bind_step_to_run
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import is_complete, salted_dir

POINTER_NAME = "latest.json"


class LatestArtifactIOManager(ConfigurableIOManager):
    """Stores an `Artifact` as its salt; loads the salt this run produced or started from.

    Every asset and check step uses it, so it is also where a step binds its life to its run's
    (`run_liveness`): set up in each step process, before any step code runs.
    """

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if context.run is not None:
            bind_step_to_run(context.instance, context.run)

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        pointer = data_dir() / obj.asset / POINTER_NAME
        pointer.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(pointer, {"asset": obj.asset, "salt": obj.salt})

    def load_input(self, context: InputContext) -> Artifact:
        asset = context.asset_key.path[-1]
        salt, source = recorded_salt(
            context.instance, context.step_context.run_id, context.asset_key
        )
        if salt is None:
            salt, source = pointer_salt(asset), f"{data_dir() / asset / POINTER_NAME}"
        folder = salted_dir(asset, salt)
        if not is_complete(folder):
            raise FileNotFoundError(
                f"{asset} salt {salt} ({source}) is missing or incomplete under "
                f"OCT_DATA_DIR={data_dir()} ({folder}); materialise {asset} again"
            )
        context.log.debug(f"{asset}: salt {salt} from {source}")
        return Artifact(asset=asset, salt=salt, path=folder)


def recorded_salt(instance: DagsterInstance, run_id: str, key: AssetKey) -> tuple[str | None, str]:
    """The salt of `key` this run materialised, else the latest one recorded before the run
    started; (None, "") when the instance has none."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(records):
        mat = record.asset_materialization
        if mat is not None and mat.asset_key == key and "salt" in mat.metadata:
            return str(mat.metadata["salt"].value), "materialised in this run"
    first = instance.get_records_for_run(run_id, limit=1).records
    started = first[0].event_log_entry.timestamp if first else None
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, before_timestamp=started), limit=1
    )
    for record in result.records:
        mat = record.asset_materialization
        if mat is not None and "salt" in mat.metadata:
            return str(mat.metadata["salt"].value), f"run {record.run_id}, before this run"
    later = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1).records
    if later:
        raise FileNotFoundError(
            f"{key.to_user_string()} was first materialised in this Dagster instance by run "
            f"{later[0].run_id}, after this run started; run this selection again, or include "
            f"{key.to_user_string()} in it"
        )
    return None, ""


def pointer_salt(asset: str) -> str:
    """The salt `<data_dir>/<asset>/latest.json` names (the latest written on this folder)."""
    pointer = data_dir() / asset / POINTER_NAME
    if not pointer.is_file():
        raise FileNotFoundError(
            f"{asset} has not been materialised under OCT_DATA_DIR={data_dir()} "
            f"(no {pointer}); materialise it first, e.g. "
            f"`dagster asset materialize -m oct_assets.definitions --select {asset}`"
        )
    try:
        return read_pointer_salt(pointer)
    except DamagedFileError as exc:
        raise DamagedFileError(f"{exc}; delete it and materialise {asset} again") from exc
