"""Image grids with captions (demo side-by-sides, contact sheets, eval grids)."""

from __future__ import annotations

import textwrap
from typing import Sequence


def fit_cell(img, cell: int):
    """`img` as a `cell`-pixel square; small (tiny/toy-model) images upscale nearest-neighbour so their pixels
    stay visible."""
    from PIL import Image

    resample = Image.NEAREST if img.width < cell else Image.BICUBIC
    return img.convert("RGB").resize((cell, cell), resample)


def captioned_grid(rows: Sequence[Sequence], captions: Sequence[str], headers: Sequence[str] | None = None,
                   cell: int = 128, caption_lines: int = 2):
    """A PNG-ready PIL image: one row of images per entry of `rows`, its caption underneath.

    Small (tiny-model) images are upscaled with nearest-neighbour so their pixels stay visible.
    """
    from PIL import Image, ImageDraw

    if len(rows) != len(captions):
        raise ValueError(f"{len(rows)} rows but {len(captions)} captions")
    ncols = max((len(r) for r in rows), default=0)
    line_h = 12
    header_h = line_h + 6 if headers else 0
    row_h = cell + caption_lines * line_h + 8
    chars = max(10, ncols * cell // 6)
    sheet = Image.new("RGB", (max(1, ncols) * cell, header_h + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for c, head in enumerate(headers or []):
        draw.text((c * cell + 4, 3), str(head)[: cell // 6], fill="black")
    for r, (images, caption) in enumerate(zip(rows, captions)):
        top = header_h + r * row_h
        for c, img in enumerate(images):
            sheet.paste(fit_cell(img, cell), (c * cell, top))
        lines = textwrap.wrap(caption.replace("\n", " "), chars)[:caption_lines]
        for i, line in enumerate(lines):
            draw.text((4, top + cell + 3 + i * line_h), line, fill="black")
    return sheet
