"""Settings declared once, with their description and valid values: the field helper of
`ml.config.TrainConfig` and `cluster.settings.SlurmSettings`, from which the Dagster config is
generated (`assets/config_from.py`) and against which a run is checked before it starts."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its description and its valid values, declared together.

    The bounds are inclusive: beyond them a run is a mistake (1e9 epochs, a 100,000 px input
    that exhausts memory after minutes) and is refused naming the field. The Dagster config is
    built from the same metadata (`field_doc`, `field_range`).
    """
    meta = {"doc": doc, "range": None if low is None else (low, high), "choices": choices}
    return field(default=default, metadata=meta)


def field_doc(f: dataclasses.Field) -> str:
    return f.metadata.get("doc", "")


def field_range(f: dataclasses.Field) -> tuple[float, float] | None:
    return f.metadata.get("range")
