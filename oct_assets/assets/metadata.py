"""Dagster metadata shared by assets: tables and inline pictures for the UI.

The Dagster UI renders markdown metadata, so a PNG inlined as a data URI shows as the picture
itself on the asset's page.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import MetadataValue

from oct_assets.contracts.formats import CLASSES, SPLITS
from oct_assets.serving.card import per_class_lines

SHOWN = 50  # at most this many items are listed in one metadata entry
SYNTHETIC_WARNING = "SYNTHETIC DATA: these are generated images, not real OCT scans"


def png_markdown(path: Path, alt: str) -> MetadataValue:
    """A PNG inlined into markdown, so the Dagster UI shows the picture itself."""
    data = base64.b64encode(path.read_bytes()).decode()
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def listing(title: str, items: Sequence[str]) -> MetadataValue:
    """A markdown bullet list of at most `SHOWN` items, saying how many more there are."""
    more = f"\n- ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    lines = "\n".join(f"- `{item}`" for item in items[:SHOWN])
    return MetadataValue.md(f"{title}\n\n{lines}{more}")


def counts_table(counts: dict[str, dict[str, int]]) -> MetadataValue:
    """Images per split (rows) and class (columns) as a markdown table."""
    head = "| split | " + " | ".join(CLASSES) + " | total |\n|---|" + "---|" * (len(CLASSES) + 1)
    rows = [
        f"| {s} | "
        + " | ".join(str(counts[s][c]) for c in CLASSES)
        + f" | {sum(counts[s].values())} |"
        for s in SPLITS
    ]
    return MetadataValue.md("\n".join([head, *rows]))


def per_class_table(m: dict[str, Any]) -> MetadataValue:
    """The per-class table of a `metrics.json` (`ml.card.per_class_lines`), for the UI."""
    return MetadataValue.md("\n".join(per_class_lines(m)))
