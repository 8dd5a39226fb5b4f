"""`cv_model`: one model per patient-grouped fold of the sample's train split (a partition per
fold), with its out-of-fold predictions; the fold models are the members of `ensemble_model`.

A fold model's salt is its fold's definition: the fold index, k, the fold seed, the training
config (its seed included) and the sample's salt. So a fold re-materialised is a cache hit, and
another seed, or the ensemble asking for the same members, reuses the folders already there.
Members train in the step's own process through `oct_assets.ml.train.train` (not through Pipes
as `trained_model` does): one single-run backfill trains every fold in one step, one after the
other, and a subprocess per fold would add a torch start-up and a Pipes session each for
nothing the step process lacks (it already dies with its run).
"""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetMaterialization,
    BackfillPolicy,
    BetaWarning,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from oct_assets.assets.images import reduced_sample
from oct_assets.assets.model import TrainedModelConfig, training_config
from oct_assets.assets.salted import GROUP
from oct_assets.contracts.assets import CV_MODEL, REDUCED_SAMPLE
from oct_assets.contracts.folds import FoldSpec
from oct_assets.contracts.formats import FOLD_SAMPLE, OOF
from oct_assets.contracts.manifest import SaltedManifest
from oct_assets.ml.config import TrainConfig
from oct_assets.store.artifact import Artifact
from oct_assets.store.publish import build_lock, publish_salted
from oct_assets.store.salt import compute_salt, is_complete, read_manifest, salted_dir

CV_MODEL_VERSION = "1"
FOLDS = 5  # k: the partitions, and the members per seed of `ensemble_model`
FOLD_KEYS = tuple(f"fold{i}" for i in range(FOLDS))
FOLD_PARTITIONS = StaticPartitionsDefinition(list(FOLD_KEYS))


@dataclass(frozen=True)
class Member:
    """A fold model to train: which fold is held out, and the training config (a dict of
    `TrainConfig`'s fields)."""

    fold: int
    train: dict[str, Any]
    k: int = FOLDS

    @property
    def spec(self) -> FoldSpec:
        return FoldSpec(self.fold, self.k)

    def config(self) -> dict[str, Any]:
        """What the salt hashes besides the sample: the fold's definition and the recipe."""
        return {**self.spec.as_dict(), "train": self.train}

    def upstream(self, sample: Artifact) -> dict[str, str]:
        return {REDUCED_SAMPLE: sample.salt}

    def salt(self, sample: Artifact) -> str:
        return compute_salt(CV_MODEL, CV_MODEL_VERSION, self.config(), self.upstream(sample))


def ensure_member(
    context: AssetExecutionContext, member: Member, sample: Artifact
) -> tuple[Artifact, bool]:
    """The fold model's salted folder, trained now unless it is complete already; (artifact,
    cache hit). The same store path as `salted_output` (one builder per salt, atomic publish,
    the same manifest), called per fold: one step may build several folds of `cv_model`, and
    `ensemble_model` builds the ones it lacks."""
    salt = member.salt(sample)
    folder = salted_dir(CV_MODEL, salt)
    hit = is_complete(folder)
    if not hit:
        with build_lock(folder):
            hit = is_complete(folder)
            if not hit:
                context.log.info(f"training {CV_MODEL} fold {member.fold} salt {salt}")
                manifest = SaltedManifest.new(
                    CV_MODEL, salt, CV_MODEL_VERSION, member.config(), member.upstream(sample)
                )
                publish_salted(
                    folder, manifest, lambda tmp: _train_member(context, member, sample, tmp)
                )
    if hit:
        context.log.info(f"cache hit: {CV_MODEL} fold {member.fold} salt {salt} at {folder}")
    return Artifact(asset=CV_MODEL, salt=salt, path=folder), hit


def record_partition(
    context: AssetExecutionContext, member: Member, art: Artifact, hit: bool
) -> None:
    """Record a fold model built outside a `cv_model` run (by `ensemble_model`) as its
    partition's materialisation, so the partitions in the UI show the folders that exist."""
    context.log_event(
        AssetMaterialization(
            asset_key=CV_MODEL,
            partition=FOLD_KEYS[member.fold],
            metadata={
                "salt": art.salt,
                "path": MetadataValue.path(str(art.path)),
                "cache_hit": hit,
                "seed": member.train["seed"],
                "recorded_by": context.asset_key.to_user_string(),
            },
        )
    )


def _train_member(
    context: AssetExecutionContext, member: Member, sample: Artifact, tmp: Path
) -> dict[str, Any]:
    """Train on the other folds, predict the held-out one; the summary kept in the manifest."""
    from oct_assets.ml.cache import default_cache_dir
    from oct_assets.ml.data import read_sample
    from oct_assets.ml.folds import write_fold_sample
    from oct_assets.ml.predict import evaluate
    from oct_assets.ml.train import train

    cache = default_cache_dir(sample.path)  # the sample's own: `<data>/cache`
    spec = member.spec
    fold_sample = write_fold_sample(read_sample(sample.path), spec, tmp / FOLD_SAMPLE)

    def on_epoch(r: dict[str, Any]) -> None:
        context.log.info(
            f"fold {member.fold} seed {member.train['seed']}: epoch {r['epoch']}/{r['epochs']} "
            f"loss {r['train_loss']:.4f} accuracy {r['train_accuracy']:.3f} ({r['seconds']} s)"
        )

    config = TrainConfig.from_dict(member.train)
    result = train(fold_sample, tmp, config, cache_dir=cache, on_epoch=on_epoch)
    metrics = evaluate(tmp, fold_sample, tmp / OOF, cache_dir=cache)
    return {
        "fold": spec.as_dict(),
        "seed": member.train["seed"],
        "oof_accuracy": metrics["accuracy"],
        "n_oof": metrics["n_images"],
        "n_fit": result.get("n_fit"),
        "train_seconds": result.get("train_seconds"),
    }


def members_table(members: list[tuple[Member, Artifact, bool]]) -> MetadataValue:
    """One row per fold model: fold, seed, salt, cache hit, out-of-fold accuracy."""
    lines = [
        "| fold | seed | salt | cache hit | out-of-fold accuracy | scans |",
        "|---|---|---|---|---|---|",
    ]
    for m, art, hit in members:
        s = read_manifest(art.path).summary
        lines.append(
            f"| {m.fold} | {m.train['seed']} | `{art.salt}` | {hit} | "
            f"{float(s['oof_accuracy']):.4f} | {s['n_oof']} |"
        )
    return MetadataValue.md("\n".join(lines))


def _cv_model(
    context: AssetExecutionContext, config: TrainedModelConfig, reduced_sample: Artifact
) -> MaterializeResult:
    """Train (or find) the fold model of every partition of the run, one after the other."""
    cfg = training_config(context, config.model_dump())
    started = time.perf_counter()
    done = []
    for key in context.partition_keys:
        member = Member(FOLD_KEYS.index(key), cfg)
        done.append((member, *ensure_member(context, member, reduced_sample)))
    salts = {FOLD_KEYS[m.fold]: art.salt for m, art, _ in done}
    metadata: dict[str, Any] = {
        "salts": MetadataValue.json(salts),
        "folds": members_table(done),
        "cache_hits": sum(hit for *_, hit in done),
        "config": MetadataValue.json(cfg),
        "upstream_salts": MetadataValue.json({REDUCED_SAMPLE: reduced_sample.salt}),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if len(done) == 1:  # one partition: its salt and folder are its own data version and path
        art = done[0][1]
        metadata.update(salt=art.salt, path=MetadataValue.path(str(art.path)))
        return MaterializeResult(metadata=metadata, data_version=DataVersion(art.salt))
    return MaterializeResult(metadata=metadata)


with warnings.catch_warnings():
    # `backfill_policy` is marked beta; it is the documented way to backfill in one run.
    warnings.simplefilter("ignore", BetaWarning)
    cv_model = asset(
        name=CV_MODEL,
        group_name=GROUP,
        code_version=CV_MODEL_VERSION,
        partitions_def=FOLD_PARTITIONS,
        backfill_policy=BackfillPolicy.single_run(),
        ins={"reduced_sample": AssetIn(reduced_sample.key)},
        description=f"A model trained on {FOLDS - 1} of {FOLDS} patient-grouped folds of "
        "`reduced_sample`'s train split, with its predictions of the held-out fold (`oof/`). "
        "A backfill of every fold runs as one run.",
    )(_cv_model)
