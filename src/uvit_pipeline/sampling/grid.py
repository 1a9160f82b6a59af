"""Sample grids: plain (`image_grid`) and with a caption under every row (class name or prompt)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .conditions import TextConditions
from .generate import SamplerSetup

GUTTER = 2  # white pixels between images
TEXT_PAD = 3  # white pixels around a label block


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow >= 10.1 ships a scalable default font; no font file is needed.
    return ImageFont.load_default(size=size)


# A row label (class name or prompt) is cut to this many characters and wrapped to at most this many
# lines, the last ending with an ellipsis when cut, so a label costs linear time and a bounded strip:
# a grid is at most rows·(H·scale + MAX_LABEL_LINES text lines) high whatever the prompts.
MAX_LABEL_CHARS = 300
MAX_LABEL_LINES = 3
ELLIPSIS = "…"


def _fit(text: str, font, width: int) -> int:
    """How many leading characters of `text` fit in `width` pixels (at least 1); linear in the
    answer (character advances summed, then checked on the prefix)."""
    total, cut = 0.0, len(text)
    for i, ch in enumerate(text):
        total += font.getlength(ch)
        if total > width:
            cut = i
            break
    cut = max(1, cut)
    while cut > 1 and font.getlength(text[:cut]) > width:  # kerning: rarely more than a step
        cut -= 1
    return cut


def _wrap(
    text: str, font, width: int, max_lines: int = MAX_LABEL_LINES, max_chars: int = MAX_LABEL_CHARS
) -> list[str]:
    """Greedy word wrap to `width` pixels; words wider than a line are split by characters. The
    text is cut to `max_chars` characters and the result to `max_lines` lines, the last one ending
    with an ellipsis when anything was cut."""
    cut = len(text) > max_chars
    text = text[:max_chars]
    lines: list[str] = []
    line = ""
    for word in text.split():
        if len(lines) > max_lines:
            cut = True
            break
        while len(word) > 1 and font.getlength(word) > width:
            n = _fit(word, font, width)
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:n])
            word = word[n:]
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines, cut = lines[:max_lines], True
    if cut and lines:
        last = lines[-1]
        while last and font.getlength(last + ELLIPSIS) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + ELLIPSIS
    return lines


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (N, 3, H, W) -> one uint8 (rows·H, columns·W, 3) image, row-major, 2 px white gutters."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    g = 2
    grid = np.full((rows * (h + g) + g, columns * (w + g) + g, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = g + r * (h + g), g + col * (w + g)
        grid[top : top + h, left : left + w] = img.transpose(1, 2, 0)
    return grid


def labelled_grid(
    images: np.ndarray,
    rows: int,
    row_labels: list[str] | None = None,
    scale: int = 1,
    font_size: int | None = None,
) -> Image.Image:
    """uint8 (N, 3, H, W) -> RGB grid of `rows` rows (N / rows columns) on white, upscaled `scale`×
    with nearest neighbour, with `row_labels[i]` written (wrapped) under row i."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    n, _, h, w = images.shape
    if rows < 1 or n % rows:
        raise ValueError(f"{n} images cannot fill {rows} equal rows")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    cols = n // rows
    ch, cw = h * scale, w * scale
    width = cols * (cw + GUTTER) + GUTTER
    font = _font(font_size or int(np.clip(ch // 8, 10, 20)))
    line_h = font.getbbox("Ag")[3] + 2
    wrapped = [_wrap(lbl, font, width - 2 * TEXT_PAD) for lbl in (row_labels or [""] * rows)]
    label_h = [len(ls) * line_h + 2 * TEXT_PAD if ls else 0 for ls in wrapped]
    height = GUTTER + sum(ch + GUTTER + lh for lh in label_h)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    big = images.repeat(scale, axis=2).repeat(scale, axis=3).transpose(0, 2, 3, 1)  # (N, ch, cw, 3)
    top = GUTTER
    for r in range(rows):
        for c in range(cols):
            canvas.paste(Image.fromarray(big[r * cols + c]), (GUTTER + c * (cw + GUTTER), top))
        top += ch + GUTTER
        for i, line in enumerate(wrapped[r]):
            draw.text((TEXT_PAD, top + TEXT_PAD + i * line_h), line, fill="black", font=font)
        top += label_h[r]
    return canvas


def sample_grid(
    setup: SamplerSetup,
    *,
    columns: int,
    sampler: str,
    steps: int,
    cfg_scale: float = 0.0,
    seed: int = 0,
    labels: list[int] | None = None,
    null_label: int | None = None,
    class_names: list[str] | None = None,
    text: TextConditions | None = None,
    unconditional_rows: int = 4,
    scale: int | None = None,
    clip_x0: bool = False,
) -> Image.Image:
    """One row per prompt of `text` (prompt written under it), per class of `labels` (class name), or
    `unconditional_rows` rows; `columns` samples per row; `scale` defaults to ≈128 px per image."""
    kw = dict(sampler=sampler, steps=steps, cfg_scale=cfg_scale, clip_x0=clip_x0, seed=seed)
    if text is not None:
        rows = len(text)
        names = text.prompts
        kw.update(
            contexts=np.repeat(text.contexts, columns, axis=0), null_context=text.null_context
        )
    elif labels is not None:
        rows = len(labels)
        names = [class_names[y] if class_names else f"class {y}" for y in labels]
        kw.update(labels=torch.tensor(labels).repeat_interleave(columns), null_label=null_label)
    else:
        rows, names = unconditional_rows, None
    images = setup.generate(n=rows * columns, progress=False, **kw)
    scale = scale or max(1, 128 // images.shape[-1])
    return labelled_grid(images, rows, names, scale=scale)
