"""`sd-bridge toyworld sheet`: a contact sheet of what the toy world's pipelines draw.

One row per prompt, four columns: the ground truth of what the source prompt means (toyworld.world.draw),
toy-sd15 on the prompt, toy-sd2 on the same prompt (identity), toy-sd2 on the oracle translation. All
renders share one seed per row. The README's picture is made with the defaults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROMPTS = ["a crimson circle", "a big azure square by bridget riley", "a small orange triangle on the left",
                   "a purple circle by yayoi kusama on a beige background",
                   "a green striped square on a black background"]
COLUMNS = ["what it means", "toy-sd15: prompt", "toy-sd2: prompt", "toy-sd2: oracle"]


@dataclass
class SheetConfig:
    """Render a contact sheet: ground truth | toy-sd15 | toy-sd2 | toy-sd2 with the oracle translation."""

    out: Path = field(default=Path("toyworld-sheet.png"), metadata={"help": "PNG file to write"})
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS), metadata={
        "help": "source-dialect toy prompts, one row each"})
    seed: int = field(default=0, metadata={"help": "base seed (each row's seed derives from it and the prompt)"})
    cell: int = field(default=128, metadata={"help": "cell size in pixels (images are upscaled, pixels kept)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "a progress bar over the renders, with an ETA",
                                                   "off_help": "no progress bar (for logs)"})

    def __post_init__(self):
        from toyworld.world import SOURCE, read

        self.out = Path(self.out)
        if self.out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ValueError(f"--out {self.out} must name an image file (.png, .jpg or .webp)")
        if not self.prompts:
            raise ValueError("give at least one prompt")
        for p in self.prompts:
            read(p, SOURCE)  # a prompt outside the grammar fails here, before anything renders
        if self.cell < 32:
            raise ValueError(f"cell must be >= 32 pixels, got {self.cell}")


def run_sheet(cfg: SheetConfig, log=print) -> Path:
    from PIL import Image, ImageDraw

    from bridge.models import presets
    from bridge.models.render import Renderer, derive_seed
    from toyworld.world import SOURCE, draw, oracle, read, realize

    # 1. What each prompt means and its correct translation.
    seeds = [derive_seed(cfg.seed, p, 0) for p in cfg.prompts]
    truths = [draw(realize(read(p, SOURCE), SOURCE, random.Random(0)), s) for p, s in zip(cfg.prompts, seeds)]
    right = [oracle(p) for p in cfg.prompts]
    # 2. Render with both pipelines.
    src = Renderer(presets.pipeline(presets.TOY_SOURCE), device=cfg.device)
    tgt = Renderer(presets.pipeline(presets.TOY_TARGET), device=cfg.device)
    # One bar over the three rendered columns: a default sheet rendered for 99 s without a word (issue #43).
    from tqdm.auto import tqdm

    with tqdm(total=3 * len(cfg.prompts), desc="sheet", unit="render", disable=not cfg.progress,
              dynamic_ncols=True) as bar:
        columns = [truths, src(cfg.prompts, seeds, on_batch=bar.update), tgt(cfg.prompts, seeds, on_batch=bar.update),
                   tgt([o.prompt for o in right], seeds, [o.negative_prompt for o in right], on_batch=bar.update)]
    # 3. Lay out: a header row, then one row per prompt with its text and oracle (wrapped) under the images.
    import textwrap

    c, line, head = cfg.cell, 14, 18
    width = c * len(COLUMNS) // 6  # characters per line of PIL's default font
    notes = []
    for prompt, o in zip(cfg.prompts, right):
        neg = f" (negative: {o.negative_prompt})" if o.negative_prompt else ""
        notes.append([(t, "black") for t in textwrap.wrap(f"prompt: {prompt}", width)]
                     + [(t, (0, 90, 0)) for t in textwrap.wrap(f"oracle: {o.prompt}{neg}", width)])
    heights = [c + 6 + line * len(n) for n in notes]
    sheet = Image.new("RGB", (c * len(COLUMNS), head + sum(heights)), "white")
    pen = ImageDraw.Draw(sheet)
    for j, name in enumerate(COLUMNS):
        pen.text((j * c + 4, 4), name, fill="black")
    y = head
    for i in range(len(cfg.prompts)):
        for j, col in enumerate(columns):
            sheet.paste(col[i].resize((c, c), Image.NEAREST), (j * c, y))
        for k, (text, colour) in enumerate(notes[i]):
            pen.text((4, y + c + 3 + k * line), text, fill=colour)
        y += heights[i]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(cfg.out)
    log(f"wrote {cfg.out} ({len(cfg.prompts)} prompts)")
    return cfg.out
