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

from oct_assets.dataset.layout import CLASSES, SPLITS

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


def interval(ci: Any) -> str:
    """A `[low, high]` interval from `metrics.json` as text ("n/a" when there is none)."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"[{float(ci[0]):.3f}, {float(ci[1]):.3f}]"
    return "n/a"


def per_class_table(m: dict[str, Any]) -> MetadataValue:
    """Precision, recall (with its 95% patient-bootstrap interval), F1, one-vs-rest ROC AUC and
    support per class, from a `metrics.json`."""
    lines = [
        "| class | precision | recall | recall 95% CI | f1 | ROC AUC | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in m["classes"]:
        p = m["per_class"][c]
        auc = "n/a" if p.get("roc_auc") is None else f"{p['roc_auc']:.3f}"
        lines.append(
            f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | {interval(p.get('recall_ci95'))}"
            f" | {p['f1']:.3f} | {auc} | {p['support']} |"
        )
    return MetadataValue.md("\n".join(lines))
