"""PNG figures drawn with Pillow (no matplotlib on cluster nodes): confusion matrix, CAM grid,
a sample's contact sheet, an inbox's sheet of CAM overlays."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 84
TILE = 160
FONT_SIZE = 14


def label_font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except (OSError, TypeError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def colormap(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] to an RGB uint8 'jet'-like ramp (blue, cyan, yellow, red)."""
    v = np.clip(values, 0, 1)[..., None]
    stops = np.array([[0, 0, 128], [0, 128, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]])
    pos = v * (len(stops) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
    t = pos - lo
    return (stops[lo[..., 0]] * (1 - t) + stops[lo[..., 0] + 1] * t).astype(np.uint8)


def confusion_matrix_png(metrics: dict[str, Any]) -> bytes:
    """Confusion matrix (rows = true, columns = predicted) shaded by row share, with counts."""
    classes, cm = metrics["classes"], np.asarray(metrics["confusion_matrix"])
    n, margin = len(classes), 110
    width, height = margin + n * CELL + 20, margin + n * CELL + 70
    im = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(im), label_font()
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            x0, y0 = margin + j * CELL, margin + i * CELL
            shade = int(255 - 200 * share[i, j])
            draw.rectangle([x0, y0, x0 + CELL, y0 + CELL], fill=(shade, shade, 255), outline="gray")
            ink = "white" if share[i, j] > 0.55 else "black"
            centre = (x0 + CELL / 2, y0 + CELL / 2)
            draw.text(centre, str(cm[i, j]), fill=ink, font=font, anchor="mm")
        draw.text(
            (margin - 8, margin + (i + 0.5) * CELL),
            classes[i],
            fill="black",
            font=font,
            anchor="rm",
        )
        draw.text(
            (margin + (i + 0.5) * CELL, margin - 8),
            classes[i],
            fill="black",
            font=font,
            anchor="mb",
        )
    draw.text((margin + n * CELL / 2, 22), "predicted", fill="black", font=font, anchor="mm")
    draw.text((8, margin - 30), "true", fill="black", font=font)
    summary = f"accuracy {metrics['accuracy']:.3f}"
    if "accuracy_ci95" in metrics:  # written by predict.with_uncertainty
        lo, hi = metrics["accuracy_ci95"]
        summary += f" (95% CI {lo:.3f}-{hi:.3f})"
    draw.text((8, margin + n * CELL + 14), summary, fill="black", font=font)
    second = f"macro F1 {metrics['macro_f1']:.3f}"
    if "patient_accuracy" in metrics:
        second += f"   per patient {metrics['patient_accuracy']:.3f}"
    draw.text((8, margin + n * CELL + 36), second, fill="black", font=font)
    return _png(im)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a CAM (any scale, image shape) over a grayscale uint8 image."""
    span = float(cam.max() - cam.min())
    heat = colormap((cam - cam.min()) / span if span > 0 else np.zeros_like(cam))
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    return Image.fromarray((gray * (1 - alpha) + heat * alpha).astype(np.uint8))


def cam_grid_png(tiles: list[dict[str, Any]], classes: list[str]) -> bytes:
    """One row per true class: correct examples, then wrong ones, each with its CAM overlay.

    Each tile dict has image (uint8 HxW), cam (float HxW, for the predicted class), true,
    pred and prob; the caption says which class the heatmap explains.
    """
    rows = {c: [t for t in tiles if t["true"] == c] for c in classes}
    cols = max([len(r) for r in rows.values()] + [1])
    label_w, cap_h = 90, 20
    im = Image.new("RGB", (label_w + cols * TILE, max(len(classes), 1) * (TILE + cap_h)), "white")
    draw, font = ImageDraw.Draw(im), label_font(12)
    for i, c in enumerate(classes):
        y = i * (TILE + cap_h)
        draw.text((6, y + TILE / 2), c, fill="black", font=label_font(), anchor="lm")
        if not rows[c]:
            draw.text((label_w + 6, y + TILE / 2), "no images", fill="gray", font=font, anchor="lm")
        for j, t in enumerate(rows[c]):
            x = label_w + j * TILE
            tile = overlay(t["image"], t["cam"]).resize((TILE - 4, TILE - 4))
            im.paste(tile, (x + 2, y + 2))
            ok = t["pred"] == t["true"]
            caption = f"{'ok' if ok else 'WRONG'}: {t['pred']} {t['prob']:.2f}"
            draw.text((x + 4, y + TILE), caption, fill="darkgreen" if ok else "red", font=font)
    return _png(im)


THUMB = 80  # pixels per contact-sheet thumbnail side
LABEL_WIDTH = 80


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
    width = LABEL_WIDTH + per_class * (THUMB + 4)
    sheet = Image.new("L", (width, len(files_by_class) * (THUMB + 4) + 4), color=255)
    draw = ImageDraw.Draw(sheet)
    font = label_font(16)
    for row, (label, files) in enumerate(files_by_class.items()):
        top = 4 + row * (THUMB + 4)
        draw.text((6, top + THUMB // 2 - 8), label, fill=0, font=font)
        for col, rel in enumerate(spread(files, per_class)):
            with Image.open(folder / rel) as img:
                img.draft("L", (THUMB * 2, THUMB * 2))  # JPEG: decode at reduced scale
                thumb = img.convert("L")
            thumb.thumbnail((THUMB, THUMB))
            left = LABEL_WIDTH + col * (THUMB + 4)
            sheet.paste(
                thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2)
            )
    return _png(sheet)


def overlay_sheet_png(tiles: list[tuple[str, Path]], columns: int = 6, tile: int = 128) -> bytes:
    """Scored scans' CAM overlays (PNG files) in a grid, each captioned (e.g. `file: CLASS
    0.93`): the inbox's contact sheet."""
    rows = max(1, -(-len(tiles) // columns))
    cap = 18
    sheet = Image.new("RGB", (columns * tile, rows * (tile + cap)), "white")
    draw, font = ImageDraw.Draw(sheet), label_font(11)
    for n, (caption, png) in enumerate(tiles):
        x, y = (n % columns) * tile, (n // columns) * (tile + cap)
        with Image.open(png) as im:
            sheet.paste(im.convert("RGB").resize((tile - 4, tile - 4)), (x + 2, y + 2))
        draw.text((x + 3, y + tile), caption[:22], fill="black", font=font)
    return _png(sheet)
