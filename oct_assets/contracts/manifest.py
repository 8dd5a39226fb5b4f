"""`manifest.json`, typed once: the record every salted folder ends with, and what a sample
folder's manifest tells the ML core.

- `SaltedManifest`: what built the folder (`asset`, `salt`, `code_version`, `config`,
  `upstream` salts, `created`) and the asset's own `summary` (e.g. a sample's `classes` and
  counts, an evaluation's `metrics`), whose keys the asset that writes it defines. The store
  writes it last into a folder (its completion marker); the Dagster layer builds it.
- `pointer_salt`: the salt a pointer beside the salted folders names.
- `SampleManifest`: what `ml.data.read_sample` needs of a sample folder's manifest, the salted
  `reduced_sample`'s or a fold sample's (`ml.folds`): its `salt` and `classes`, and the `fold`
  a fold sample holds out.

On disk both are one flat JSON object, as they have always been.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oct_assets.contracts.errors import DamagedFileError, SampleError
from oct_assets.contracts.files import read_json, write_bytes
from oct_assets.contracts.formats import MANIFEST_JSON

# The keys every salted manifest has; the rest of the object is the asset's summary.
BASE_KEYS = ("asset", "salt", "code_version", "config", "upstream", "created")


@dataclass(frozen=True)
class SaltedManifest:
    """The manifest of a salted folder `<data>/<asset>/<salt>/`."""

    asset: str
    salt: str
    code_version: str
    config: dict[str, Any]
    upstream: dict[str, str]
    created: str
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        asset: str,
        salt: str,
        code_version: str,
        config: Mapping[str, Any],
        upstream: Mapping[str, str],
    ) -> SaltedManifest:
        """The manifest of a build starting now (its summary is added when the build ends)."""
        return cls(
            asset=asset,
            salt=salt,
            code_version=code_version,
            config=dict(config),
            upstream=dict(upstream),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    def with_summary(self, summary: Mapping[str, Any]) -> SaltedManifest:
        clash = sorted(set(summary) & set(BASE_KEYS))
        if clash:
            raise ValueError(f"{self.asset}'s summary may not set {', '.join(clash)}")
        return SaltedManifest(**{**self.__dict__, "summary": {**self.summary, **summary}})

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object on disk: the base keys, then the summary's."""
        return {**{key: getattr(self, key) for key in BASE_KEYS}, **self.summary}

    @classmethod
    def from_json(cls, obj: Any, source: Path | str) -> SaltedManifest:
        if not isinstance(obj, dict):
            raise DamagedFileError(f"{source} is damaged (not a JSON object)")
        missing = [key for key in BASE_KEYS if key not in obj]
        if missing:
            raise DamagedFileError(f"{source} is damaged (no {', '.join(missing)} in it)")
        summary = {k: v for k, v in obj.items() if k not in BASE_KEYS}
        return cls(**{key: obj[key] for key in BASE_KEYS}, summary=summary)

    @classmethod
    def read(cls, folder: Path) -> SaltedManifest:
        """The manifest of a complete salted folder; a `DamagedFileError` names a damaged one."""
        path = Path(folder) / MANIFEST_JSON
        return cls.from_json(read_json(path), path)


def pointer_salt(path: Path) -> str:
    """The salt a pointer beside salted folders names: the store's `latest.json`, the
    champion's `current.json`, the inbox's `.latest/` files, each a JSON object with a `salt`
    (and, by kind, what it points for). A `DamagedFileError` names a damaged one."""
    obj = read_json(path)
    salt = obj.get("salt") if isinstance(obj, dict) else None
    if not isinstance(salt, str) or not salt:
        raise DamagedFileError(f"{path} is damaged (no salt in it)")
    return salt


@dataclass(frozen=True)
class SampleManifest:
    """What the ML core reads of a sample folder's manifest."""

    salt: str
    classes: tuple[str, ...]
    fold: dict[str, Any] | None = None  # a fold sample's `folds.FoldSpec`

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"salt": self.salt, "classes": list(self.classes)}
        if self.fold is not None:
            out["fold"] = dict(self.fold)
        return out

    def write(self, folder: Path) -> Path:
        """Write `folder/manifest.json` of a sample folder built outside the store."""
        path = Path(folder) / MANIFEST_JSON
        write_bytes(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())
        return path

    @classmethod
    def read(cls, folder: Path) -> SampleManifest:
        """The sample manifest of `folder`; a `SampleError` names the file and what is wrong."""
        path = Path(folder) / MANIFEST_JSON
        try:
            obj = read_json(path)
        except DamagedFileError as exc:
            raise SampleError(f"{path} is not valid JSON: {exc.__cause__ or exc}") from exc
        if not isinstance(obj, dict):
            raise SampleError(f"{path} is not valid JSON: not an object")
        salt, classes, fold = obj.get("salt"), obj.get("classes"), obj.get("fold")
        if not isinstance(salt, str) or not salt:
            raise SampleError(f"{path}: 'salt' must be a non-empty string")
        if (
            not isinstance(classes, list)
            or not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise SampleError(f"{path}: 'classes' must be a non-empty list of unique names")
        if fold is not None and not isinstance(fold, dict):
            raise SampleError(f"{path}: 'fold' must be an object")
        return cls(salt=salt, classes=tuple(classes), fold=fold)
