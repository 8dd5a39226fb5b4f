"""A fold's definition: which of `k` patient folds of a sample's train split is held out.

With the sample's salt and the training config it is everything a fold model depends on, so it
goes into the fold model's salt and into its fold sample's manifest (`SampleManifest.fold`).
Pure Python: the Dagster definitions and the ML core (`ml.folds`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from oct_assets.contracts.errors import OctMLError

FOLD_SEED = 123  # the seed of the patients' deal into folds (the recipe log's folds)


@dataclass(frozen=True)
class FoldSpec:
    """One fold: which of `k` patient folds (dealt with `fold_seed`) is held out."""

    fold: int
    k: int
    fold_seed: int = FOLD_SEED

    def __post_init__(self) -> None:
        if self.k < 2 or not 0 <= self.fold < self.k:
            raise OctMLError(f"fold {self.fold} of {self.k}: need k >= 2 and 0 <= fold < k")

    def as_dict(self) -> dict[str, int]:
        return {"fold": self.fold, "k": self.k, "fold_seed": self.fold_seed}
