"""`model.json`, typed once: what a model folder records about the network in `model.pt`.

Every writer (the trainer, the ensemble) builds a `ModelInfo` and calls `write`; every reader
calls `ModelInfo.read` and reads attributes, never string keys. Two kinds share the format:

- a **trained network** (`trained_model`, `cluster_model`, `cv_model`): classes, input
  geometry, the `TrainConfig` it was trained with, its training metrics and where it ran;
- an **ensemble** (`kind: "ensemble"`): no weights of its own, its `members` (asset, salt) are
  model folders beside it in the salted store, averaged by `ml.ensemble.EnsembleNet`.

Model folders never change once published, so `read` also takes what an older version wrote
(keys added since are None) and ignores keys it does not know. `to_text` of what the current
writers produce is byte-for-byte what they have always written (keys in the same order).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oct_assets.contracts.errors import DamagedFileError, OctMLError
from oct_assets.contracts.files import read_json, write_bytes
from oct_assets.contracts.formats import MODEL_JSON

ENSEMBLE_KIND = "ensemble"
# Set by a launcher that knows the environment it trains in (the cluster job): the trainer
# records it, with the versions it runs, as `ModelInfo.environment`.
TRAINING_ENV_HASH_VAR = "OCT_TRAINING_ENV_HASH"

# Keys in the order each kind has always written them (`environment` follows when recorded).
_TRAINED_KEYS = (
    "classes",
    "input",
    "architecture",
    "config",
    "metrics",
    "device",
    "gpu_name",
    "world_size",
    "amp",
    "epochs_run",
    "best_epoch",
    "train_seconds",
    "images_per_second",
    "torch_version",
    "sample_salt",
    "min_image_size",
)
_ENSEMBLE_KEYS = (
    "kind",
    "members",
    "classes",
    "input",
    "architecture",
    "config",
    "members_tta_flip",
    "sample_salt",
    "min_image_size",
    "torch_version",
    "device",
)


@dataclass(frozen=True)
class InputGeometry:
    """What the network is fed: `size`-pixel squares of `channels` channels, each scan fitted
    to the square by `fit` (`TrainConfig.fit`). Decoding for training, evaluation, scoring and
    export all read it from here."""

    size: int
    channels: int
    fit: str


@dataclass(frozen=True)
class EnsembleMember:
    """A member of an ensemble: the model folder `<data>/<asset>/<salt>/`."""

    asset: str
    salt: str


@dataclass(frozen=True)
class ModelInfo:
    """The content of a model folder's `model.json`."""

    classes: tuple[str, ...]
    input: InputGeometry
    # `TrainConfig.to_dict()` of the training run (an ensemble: its first member's, flip TTA
    # off); read it back with `TrainConfig.from_saved`, which also takes older configs.
    config: dict[str, Any]
    architecture: str | None = None
    sample_salt: str | None = None  # the sample the network was trained on
    min_image_size: int | None = None
    torch_version: str | None = None
    device: str | None = None
    # A trained network: the trainer's metrics (history included) and some of them again at
    # the top level, as they have always been written.
    metrics: dict[str, Any] | None = None
    gpu_name: str | None = None
    world_size: int | None = None
    amp: bool | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    # The environment the network was trained in (e.g. the cluster's: its hash, python, torch
    # and CUDA versions); omitted from the file when not recorded.
    environment: dict[str, Any] | None = None
    # An ensemble.
    kind: str | None = None
    members: tuple[EnsembleMember, ...] = ()
    members_tta_flip: tuple[bool, ...] = ()

    @property
    def is_ensemble(self) -> bool:
        return self.kind == ENSEMBLE_KIND

    def to_json(self) -> dict[str, Any]:
        """The JSON object `model.json` holds (plain lists and dicts, keys in writing order)."""
        keys = _ENSEMBLE_KEYS if self.is_ensemble else _TRAINED_KEYS
        out = {key: _plain(getattr(self, key)) for key in keys}
        if self.environment is not None:
            out["environment"] = dict(self.environment)
        return out

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, folder: Path) -> Path:
        """Write `folder/model.json` atomically; return its path."""
        path = Path(folder) / MODEL_JSON
        write_bytes(path, self.to_text().encode())
        return path

    @classmethod
    def read(cls, folder: Path) -> ModelInfo:
        """The `model.json` of a model folder.

        Raises:
            OctMLError: the folder has no model.json.
            DamagedFileError: it is not JSON, or lacks (or mistypes) a key every model has;
                the message names the file.
        """
        path = Path(folder) / MODEL_JSON
        if not path.is_file():
            raise OctMLError(f"model folder {folder} has no {MODEL_JSON}")
        return cls.from_json(read_json(path), path)

    @classmethod
    def from_text(cls, text: str, source: Path | str) -> ModelInfo:
        """A `model.json` held as text (the copy inside a TorchScript export); `source` names
        it in errors."""
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise DamagedFileError(f"{source} is damaged (not JSON: {exc})") from exc
        return cls.from_json(obj, source)

    @classmethod
    def from_json(cls, obj: Any, source: Path | str) -> ModelInfo:
        """A parsed `model.json`; `source` names it in errors."""
        try:
            if not isinstance(obj, dict):
                raise TypeError("not a JSON object")
            geometry = obj["input"]
            known = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in obj.items() if k in known}
            classes = _typed(obj["classes"], list, "classes")
            values.update(
                classes=tuple(_typed(c, str, "a class") for c in classes),
                input=InputGeometry(
                    size=_typed(geometry["size"], int, "input.size"),
                    channels=_typed(geometry["channels"], int, "input.channels"),
                    fit=_typed(geometry["fit"], str, "input.fit"),
                ),
                config=_typed(obj["config"], dict, "config"),
                members=tuple(
                    EnsembleMember(asset=str(m["asset"]), salt=str(m["salt"]))
                    for m in obj.get("members") or ()
                ),
                members_tta_flip=tuple(bool(t) for t in obj.get("members_tta_flip") or ()),
            )
            info = cls(**values)
            if info.is_ensemble and not info.members:
                raise KeyError("members")
            return info
        except KeyError as exc:
            raise DamagedFileError(f"{source} is damaged (no {exc} in it)") from exc
        except TypeError as exc:
            raise DamagedFileError(f"{source} is damaged ({exc})") from exc


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} is {value!r}, not {kind.__name__}")
    return value


def _plain(value: Any) -> Any:
    """Dataclasses and tuples as the JSON objects and lists they were read from."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
