"""`sd-bridge index REFERENCE --out DIR`: a reference collection embedded once with the scorer into a cached,
resumable parquet index (bridge.sweep.reference builds and searches it).

    1. list     the collection: names, sizes and dates only
    2. embed    shard by shard, each shard written atomically and kept when a rerun finds it current
    3. record   index.json and the resolved config beside the shards

Exit status: 0 every image indexed, 3 finished with files it could not read (listed in OUT/errors.jsonl; the
rest is indexed), 2 usage, 1 another run holds OUT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.config import save_config
from bridge.models import presets
from bridge.sweep.reference import APPROXIMATE_FROM, ERRORS, MAX_PIXELS, build_index, list_source


@dataclass
class IndexConfig:
    """Embed a reference collection once with the scorer into a cached, resumable parquet index."""

    reference: str | None = field(default=None, metadata={
        "help": "a folder of images, a dataset from `sd-bridge gather`, a saved HF dataset, or hf:NAME[:SPLIT]",
        "positional": "?"})
    out: Path | None = field(default=None, metadata={"help": "index directory (written or resumed)"})
    scorer: str = field(default="auto", metadata={"help": "scorer preset (auto: vit-h-14 when local, else toy-clip)"})
    image_column: str | None = field(default=None, metadata={"help": "image column of a dataset (default: the first "
                                                                     "image-typed column)"})
    caption_column: str | None = field(default=None, metadata={"help": "caption column of a dataset (default: prompt "
                                                                       "or text when present)"})
    batch: int = field(default=64, metadata={"help": "images embedded per scorer call"})
    search: Literal["auto", "exact", "approximate"] = field(default="auto", metadata={
        "help": f"auto: an approximate index (faiss IVF, 8-bit) beside the shards from {APPROXIMATE_FROM:,} "
                "references; exact: none (search holds every embedding); approximate: always"})
    nprobe: int | None = field(default=None, metadata={
        "help": "lists an approximate search scans per query (default: 2%% of them, at least 32): more finds more "
                "of the true nearest, more slowly; changing it keeps the built index"})
    max_pixels: int = field(default=MAX_PIXELS, metadata={
        "help": "an image larger than this (width x height) is listed as an error, checked before it is decoded"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})

    def __post_init__(self):
        if not self.reference:
            raise ValueError("give the REFERENCE to index: a folder of images, a gathered dataset or hf:NAME")
        if self.out is None:
            raise ValueError("--out is required (the index directory)")
        self.out = Path(self.out)
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.nprobe is not None and self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")
        if not self.reference.startswith("hf:") and not Path(self.reference).exists():
            raise ValueError(f"reference {self.reference} does not exist")
        if self.scorer != "auto":
            presets.scorer(self.scorer)


def run_index(cfg: IndexConfig, log=print) -> int:
    from tqdm.auto import tqdm

    from bridge.models.loading import real_or_toy
    from bridge.models.score import Scorer

    preset, toy = real_or_toy("scorer", cfg.scorer, presets.DEFAULT_SCORER, presets.TOY_SCORER)
    if toy:
        log(presets.TOY_NOTE)
    cfg.scorer = preset.name
    # 1. List the collection (nothing is read but names, sizes and dates).
    source = list_source(cfg.reference, cfg.scorer, cfg.image_column, cfg.caption_column)
    # 2. Embed shard by shard; 3. write index.json and the config beside it.
    with tqdm(total=len(source.paths), unit="img", desc="index", dynamic_ncols=True) as bar:
        meta = build_index(source, cfg.out, Scorer(preset, device=cfg.device, batch_size=cfg.batch), cfg.batch,
                           bar.update, cfg.search, cfg.nprobe, log, cfg.max_pixels)
    save_config(cfg, cfg.out, scorer=meta["scorer"])
    search = (f"approximate search ({meta['approximate']['kind']}, {meta['approximate']['nprobe']} lists per query)"
              if "approximate" in meta else "exact search")
    log(f"index: {meta['rows']} images from {cfg.reference} ({meta['embedded_this_run']} embedded this run, the rest "
        f"kept), scorer {cfg.scorer}, dimension {meta['dim']}, {search} -> {cfg.out}")
    if meta["errors"]:
        log(f"index: {meta['errors']} files could not be read and are not in the index; they are listed in "
            f"{cfg.out / ERRORS}")
        return 3
    return 0
