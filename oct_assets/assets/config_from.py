"""Dagster run config generated from a library's settings dataclass: one declaration per block.

The libraries (`ml.config.TrainConfig`, `cluster.settings.SlurmSettings`) declare each setting
once with its type, default, description and bounds (`ml.config.setting`), validate themselves
and run without Dagster; this mirrors such a dataclass for the launchpad and run config.
"""

import dataclasses
import typing
from typing import Any

from dagster import Config
from pydantic import Field, create_model

from oct_assets.contracts.settings import field_doc, field_range


def dagster_config_from(dc: type, name: str) -> type[Config]:
    """A Dagster `Config` named `name` with the fields, types, defaults, descriptions and
    bounds of the dataclass `dc`; a `tuple[X, ...]` field becomes a `list[X]` (run config has
    lists, a frozen dataclass keeps tuples)."""
    hints = typing.get_type_hints(dc)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(dc):
        bounds = field_range(f)
        limits = {} if bounds is None else {"ge": bounds[0], "le": bounds[1]}
        kind, default = hints[f.name], f.default
        if typing.get_origin(kind) is tuple:
            kind = list[typing.get_args(kind)[0]]
            fields[f.name] = (
                kind,
                Field(default_factory=lambda d=default: list(d), description=field_doc(f)),
            )
            continue
        fields[f.name] = (kind, Field(default=default, description=field_doc(f), **limits))
    return create_model(name, __base__=Config, **fields)
