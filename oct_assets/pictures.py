"""Small pictures for the UI: a sample's contact sheet, and any PNG as inline markdown metadata.

The Dagster UI renders markdown metadata, so a PNG inlined as a data URI shows as the picture
itself on the asset's page. Pillow is imported inside the function that draws.
"""

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from dagster import MetadataValue

TILE = 80  # pixels per thumbnail side
LABEL_WIDTH = 80


def png_markdown(path: Path, alt: str) -> MetadataValue:
    """A PNG inlined into markdown, so the Dagster UI shows the picture itself."""
    data = base64.b64encode(path.read_bytes()).decode()
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def spread(items: Sequence[str], n: int) -> list[str]:
    """`n` items spread evenly over sorted `items` (all of them when there are fewer)."""
    ordered = sorted(items)
    if len(ordered) <= n:
        return ordered
    return [ordered[i * len(ordered) // n] for i in range(n)]


def contact_sheet_png(
    folder: Path, files_by_class: dict[str, Sequence[str]], per_class: int = 5
) -> bytes:
    """One row of `per_class` grayscale thumbnails per class, labelled; files are relative to
    `folder`. Picked evenly over each class's sorted files, so the sheet is deterministic."""
    from PIL import Image, ImageDraw, ImageFont

    width = LABEL_WIDTH + per_class * (TILE + 4)
    sheet = Image.new("L", (width, len(files_by_class) * (TILE + 4) + 4), color=255)
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(16)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    for row, (label, files) in enumerate(files_by_class.items()):
        top = 4 + row * (TILE + 4)
        draw.text((6, top + TILE // 2 - 8), label, fill=0, font=font)
        for col, rel in enumerate(spread(files, per_class)):
            with Image.open(folder / rel) as img:
                img.draft("L", (TILE * 2, TILE * 2))  # JPEG: decode at reduced scale
                thumb = img.convert("L")
            thumb.thumbnail((TILE, TILE))
            left = LABEL_WIDTH + col * (TILE + 4)
            sheet.paste(thumb, (left + (TILE - thumb.width) // 2, top + (TILE - thumb.height) // 2))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
