"""`champion_model`: the model that scores new scans, promoted only through a quality gate."""

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from oct_assets.assets.ensemble import ensemble_predictions
from oct_assets.assets.metadata import png_markdown
from oct_assets.assets.predictions import cluster_predictions, predictions
from oct_assets.assets.salted import salted_output
from oct_assets.contracts.assets import (
    CHAMPION_MODEL,
    CLUSTER_MODEL,
    CLUSTER_PREDICTIONS,
    ENSEMBLE_MODEL,
    ENSEMBLE_PREDICTIONS,
    PREDICTIONS,
    REDUCED_SAMPLE,
    TRAINED_MODEL,
)
from oct_assets.contracts.files import exclusive_lock, write_json_atomic
from oct_assets.contracts.formats import CAM_GRID_PNG, MANIFEST_JSON
from oct_assets.paths import data_dir
from oct_assets.serving.champion import (
    CHAMPION_JSON,
    EXPORT_CHECK_JSON,
    MODEL_CARD_MD,
    MODEL_TS,
    Candidate,
    Decision,
    champion_info,
    decide,
    read_current,
    write_current,
)
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import is_complete, read_manifest

# The serving assets' own group: the `oct` group stays the training graph, and the UI shows
# putting the model to work (champion, inbox) as a second graph downstream of it.
SERVING_GROUP = "serving"
# Each evaluation asset and the model asset it scores.
EVALUATED_MODEL = {
    PREDICTIONS: TRAINED_MODEL,
    CLUSTER_PREDICTIONS: CLUSTER_MODEL,
    ENSEMBLE_PREDICTIONS: ENSEMBLE_MODEL,
}
# Evaluations that are candidates when this instance has materialised them (not inputs: the
# champion does not wait for a cluster job or a cross-validation).
OTHER_EVALUATIONS = (cluster_predictions, ensemble_predictions)
# Beside the champion folders: held from reading `current.json` to rewriting it.
PROMOTION_LOCK = ".promotion.lock"


class ChampionConfig(Config):
    """The promotion rule."""

    accuracy_floor: float = Field(
        default=0.5, ge=0, le=1, description="test accuracy a candidate needs to be promoted"
    )
    reset: bool = Field(
        default=False,
        description="ignore the current champion and choose afresh among the candidates (e.g. "
        "after a new sample, whose test split the current champion was not scored on); "
        "not part of the salt",
    )


def candidate_from(evaluation: Path) -> Candidate:
    """A candidate from a complete `predictions` / `cluster_predictions` folder."""
    manifest = read_manifest(evaluation)
    model_asset = EVALUATED_MODEL[manifest.asset]
    model_salt = manifest.upstream["model"]
    metrics = manifest.summary["metrics"]
    return Candidate(
        model_asset=model_asset,
        model_salt=model_salt,
        model_dir=f"{model_asset}/{model_salt}",
        sample_salt=manifest.upstream[REDUCED_SAMPLE],
        evaluation_asset=manifest.asset,
        evaluation_salt=manifest.salt,
        accuracy=float(metrics["accuracy"]),
        macro_f1=float(metrics["macro_f1"]),
    )


def latest_folder(context: AssetExecutionContext, key: AssetKey) -> Path | None:
    """The folder of `key`'s latest materialisation in this instance, if complete."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    path = event.asset_materialization.metadata.get("path")
    folder = Path(str(path.value)) if path is not None else None
    return folder if folder is not None and is_complete(folder) else None


def gather_candidates(
    context: AssetExecutionContext, local: Artifact
) -> tuple[list[Candidate], list[str]]:
    """The local evaluation (an input) and, when this instance has them, the cluster model's and
    the cross-validated ensemble's."""
    notes: list[str] = []
    folders = [local.path]
    for other in OTHER_EVALUATIONS:
        folder = latest_folder(context, other.key)
        if folder is None:
            name = other.key.to_user_string()
            notes.append(f"{name}: no complete materialisation here, not a candidate")
        else:
            folders.append(folder)
    candidates = []
    for folder in folders:
        c = candidate_from(folder)
        if is_complete(data_dir() / c.model_dir):
            candidates.append(c)
        else:
            notes.append(f"{c.label()}: its folder {data_dir() / c.model_dir} is gone, skipped")
    return candidates, notes


@asset(
    name=CHAMPION_MODEL,
    group_name=SERVING_GROUP,
    code_version="1",
    ins={"predictions": AssetIn(predictions.key)},
    deps=list(OTHER_EVALUATIONS),
    description="The model that scores new scans: the best of `trained_model`, `cluster_model` "
    "and `ensemble_model` on the same test split, promoted only above an accuracy floor and when "
    "not worse than the current champion. Its folder points at the model (`champion.json`).",
)
def champion_model(
    context: AssetExecutionContext, config: ChampionConfig, predictions: Artifact
) -> Output[Artifact]:
    root = data_dir() / CHAMPION_MODEL
    # One promotion at a time, from reading the current champion to writing the new pointer:
    # two promotions started together must end on the better model, not the one written last.
    with exclusive_lock(root / PROMOTION_LOCK) as waited:
        if waited:
            context.log.info("waited for another promotion to finish")
        return _promote(context, config, predictions, root)


def _promote(
    context: AssetExecutionContext, config: ChampionConfig, predictions: Artifact, root: Path
) -> Output[Artifact]:
    """Read the current champion, decide, build the champion folder, point `current.json` at it
    (under the promotion lock)."""
    candidates, notes = gather_candidates(context, predictions)
    found = None if config.reset else read_current(root)
    current = Candidate.from_dict(found[1]["model"]) if found else None
    decision = decide(candidates, current, config.accuracy_floor)
    for line in [*notes, *decision.reasons]:
        context.log.info(line)
    if decision.champion is None:
        raise Failure(description="no champion: " + "; ".join([*notes, *decision.reasons]))
    chosen = decision.champion
    rule = {"accuracy_floor": config.accuracy_floor}

    def build(tmp: Path) -> dict[str, Any]:
        info = champion_info(decision, rule)
        write_json_atomic(tmp / CHAMPION_JSON, info)
        return {"champion": info["model"], "export": write_card_and_export(chosen, rule, tmp)}

    output = salted_output(
        context,
        config=rule,
        upstream={"model": chosen.model_salt, "evaluation": chosen.evaluation_salt},
        build=build,
        describe=lambda folder, s: describe_champion(folder, s, decision, candidates, notes),
    )
    write_current(root, output.value.salt)
    return output


def write_card_and_export(chosen: Candidate, rule: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """`model_card.md` (with the evaluation's CAM grid beside it) and `model.ts`, checked
    against the project's loader on the test split it was scored on."""
    from oct_assets.serving.card import model_card_md
    from oct_assets.serving.export import export_difference, export_torchscript

    data = data_dir()
    (tmp / MODEL_CARD_MD).write_text(model_card_md(data, asdict(chosen), rule))
    grid = data / chosen.evaluation_asset / chosen.evaluation_salt / CAM_GRID_PNG
    if grid.is_file():
        shutil.copy2(grid, tmp / CAM_GRID_PNG)
    export_torchscript(data / chosen.model_dir, tmp / MODEL_TS)
    check = export_difference(
        data / chosen.model_dir, tmp / MODEL_TS, data / REDUCED_SAMPLE / chosen.sample_salt
    )
    write_json_atomic(tmp / EXPORT_CHECK_JSON, check)
    return check


def describe_champion(
    folder: Path,
    s: dict[str, Any],
    decision: Decision,
    candidates: list[Candidate],
    notes: list[str],
) -> dict[str, Any]:
    c = s["champion"]
    rows = ["| model | salt | sample | accuracy | macro F1 |", "|---|---|---|---|---|"]
    rows += [
        f"| {x.model_asset} | {x.model_salt} | {x.sample_salt} | {x.accuracy:.4f} | "
        f"{x.macro_f1:.4f} |"
        for x in candidates
    ]
    meta: dict[str, Any] = {
        "promoted": decision.promoted,
        "why": MetadataValue.md("\n".join(f"- {r}" for r in [*notes, *decision.reasons])),
        "model_asset": c["model_asset"],
        "model_salt": c["model_salt"],
        "model_path": MetadataValue.path(str(data_dir() / c["model_dir"])),
        "sample_salt": c["sample_salt"],
        "accuracy": float(c["accuracy"]),
        "macro_f1": float(c["macro_f1"]),
        "candidates": MetadataValue.md("\n".join(rows)),
        "manifest": MetadataValue.path(str(folder / MANIFEST_JSON)),
        "model_ts": MetadataValue.path(str(folder / MODEL_TS)),
        "export_max_abs_diff": float(s["export"]["max_abs_diff"]),
        "model_card": MetadataValue.md((folder / MODEL_CARD_MD).read_text()),
    }
    if (folder / CAM_GRID_PNG).is_file():
        meta["cam_grid"] = png_markdown(folder / CAM_GRID_PNG, "class-activation maps")
    return meta
