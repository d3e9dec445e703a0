"""`sd-bridge sweep PROMPT --seeds 16 --out DIR`: what each model draws for one prompt over many seeds (issue #14).

Per prompt (one argument, or every prompt of `--prompts FILE`):
  1. the seeds: `--seed-list`, or `--seeds` derived from the base seed and the prompt (as `gather` derives them);
  2. the rows asked for, each a (model, text): the source model with the prompt, the target with the prompt
     (identity), the target with the translation (an adapter, else the syntax strategy), and in the toy world
     the target with the oracle's correct translation;
  3. renders at the same seeds for every row (cached in OUT/render-cache, so a rerun renders nothing) and
     their scorer embeddings;
  4. per row its breadth (bridge.sweep.breadth: mean pairwise distance with a bootstrap interval, clusters) and
     its breadth ratio to the source row; with `--reference INDEX`, each render's nearest references and
     whether it is a duplicate;
  5. a grid PNG per prompt (a row per model/strategy, a column per seed, the text and seed under each image,
     and each render's nearest reference beside it), `index.html` showing every render, and `sweep.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.sweep import breadth as B
from bridge.models import presets
from bridge.config import json_summary_field, print_json_summary, save_config, summary_log
from bridge.files import atomic_write
from bridge.syntax.policy import MigrationPolicy
from bridge.sweep.reference import DUPLICATE_THRESHOLD, check_index_dir

ROWS = ("source", "identity", "translation", "oracle")


# Bounds on the work one sweep may ask for (issue #41: --seeds 1000000 started rendering, --cell 60000 reached
# 9.2 GB within a minute). 256 seeds x 4 rows at 256 px is a 64 Mpx grid, about 200 MB as RGB.
MAX_SEEDS, MIN_CELL, MAX_CELL, MAX_GRID_PIXELS = 256, 16, 1024, 64_000_000


@dataclass
class SweepConfig(MigrationPolicy):
    """Render one prompt over many seeds on each model: a grid, breadth per row, nearest references."""

    prompt: str | None = field(default=None, metadata={"help": "the prompt (or --prompts FILE)", "positional": "?"})
    negative: str | None = field(default=None, metadata={"help": "negative prompt (with a single prompt)"})
    prompts: str | None = field(default=None, metadata={
        "help": "a prompt file (txt/csv/tsv/jsonl): one grid per prompt"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts of --prompts"})
    prompt_column: str = field(default="prompt", metadata={"help": "prompt column of --prompts"})
    negative_column: str | None = field(default=None, metadata={"help": "negative prompt column of --prompts"})
    out: Path | None = field(default=None, metadata={"help": "output directory"})
    seeds: int = field(default=16, metadata={"help": f"seeds per prompt, derived from --seed and the prompt "
                                                     f"(at most {MAX_SEEDS})"})
    seed_list: list[int] = field(default_factory=list, metadata={"help": "explicit seeds instead (e.g. 1 2 3)"})
    seed: int = field(default=0, metadata={"help": "base seed of derived seeds and of bootstrap intervals"})
    rows: list[str] = field(default_factory=lambda: ["source", "identity", "translation"], metadata={
        "help": "rows to render: source (source model, the prompt), identity (target, the prompt), translation "
                "(target, the translation), oracle (target, the toy world's correct translation)"})
    source: str = field(default="auto", metadata={
        "help": "source pipeline preset (auto: sd15 when local, else toy-sd15)"})
    target: str = field(default="auto", metadata={"help": "target pipeline preset (auto: sd2-base or toy-sd2)"})
    scorer: str = field(default="auto", metadata={"help": "scorer preset (auto: vit-h-14 or toy-clip)"})
    adapter: Path | None = field(default=None, metadata={"help": "adapter for the translation row (default: the "
                                                                  "syntax strategy)"})
    reference: Path | None = field(default=None, metadata={"help": "a reference index from `sd-bridge index`: nearest "
                                                                    "references and duplicates per render"})
    top_k: int = field(default=3, metadata={"help": "nearest references listed per render"})
    duplicate_threshold: float = field(default=DUPLICATE_THRESHOLD, metadata={
        "help": "a render whose nearest reference is at least this similar is a duplicate (calibrated on the toy "
                "world with toy-clip; see README)"})
    cluster_threshold: float = field(default=B.CLUSTER_THRESHOLD, metadata={
        "help": "distance (1 - cosine) at which average-linkage clustering stops merging"})
    cell: int = field(default=96, metadata={"help": f"grid cell size in pixels ({MIN_CELL} to {MAX_CELL})"})
    max_chars: int = field(default=20_000, metadata={"help": "a prompt or negative prompt longer than this is refused "
                                                             "(as migrate --max-chars)"})
    render_batch: int = field(default=8, metadata={"help": "images per pipeline call"})
    cache_dir: Path | None = field(default=None, metadata={"help": "render cache (default: OUT/render-cache)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    progress: bool = field(default=True, metadata={"help": "a progress bar for each row's renders, with an ETA",
                                                   "off_help": "no progress bars (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        super().__post_init__()
        self.write_a1111("sweep")
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give one PROMPT or --prompts FILE")
        if self.negative is not None and self.prompts is not None:
            raise ValueError("--negative goes with a PROMPT argument; a prompt file carries its own negatives")
        if self.out is None:
            raise ValueError("--out is required (the sweep directory)")
        self.out = Path(self.out)
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown or not self.rows or len(set(self.rows)) != len(self.rows):
            raise ValueError(f"unknown row {unknown[0]!r}; choose from {', '.join(ROWS)}" if unknown else
                             f"--rows takes each of {', '.join(ROWS)} at most once, and at least one")
        if self.seed_list:
            if len(set(self.seed_list)) != len(self.seed_list):
                raise ValueError("--seed-list repeats a seed")
            if any(not 0 <= s < 2**63 for s in self.seed_list):
                raise ValueError("seeds must be integers in [0, 2**63)")
            self.seeds = len(self.seed_list)
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.seeds > MAX_SEEDS:
            raise ValueError(f"seeds: {self.seeds} is over the limit of {MAX_SEEDS} per prompt (a grid is read by a "
                             "person; breadth intervals are tight long before that)")
        for name in ("top_k", "render_batch", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not MIN_CELL <= self.cell <= MAX_CELL:
            raise ValueError(f"cell must be {MIN_CELL} to {MAX_CELL} pixels, got {self.cell}")
        # One grid image holds rows x seeds cells (two per seed beside a reference): bounded, so its memory is.
        cells = len(self.rows) * self.seeds * (2 if self.reference is not None else 1)
        if cells * self.cell ** 2 > MAX_GRID_PIXELS:
            raise ValueError(f"the grid would hold {cells} cells of {self.cell} px, {cells * self.cell ** 2 / 1e6:.0f} "
                             f"Mpx, over the limit of {MAX_GRID_PIXELS / 1e6:.0f} Mpx: ask for fewer --seeds or a "
                             "smaller --cell")
        for what, text in (("prompt", self.prompt), ("negative prompt", self.negative)):
            if text is not None and len(text) > self.max_chars:
                raise ValueError(f"the {what} has {len(text):,} characters; the limit is {self.max_chars:,} "
                                 "(--max-chars)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not -1.0 <= self.duplicate_threshold <= 1.0:
            raise ValueError(f"duplicate-threshold is a cosine similarity in [-1, 1], got {self.duplicate_threshold}")
        if not 0.0 <= self.cluster_threshold <= 2.0:
            raise ValueError(f"cluster-threshold is a distance in [0, 2], got {self.cluster_threshold}")
        check_index_dir(self.reference)


def load_prompts(cfg: SweepConfig) -> list[tuple[str, str | None]]:
    if cfg.prompt is not None:
        return [(cfg.prompt, cfg.negative)]
    from bridge.io.clean import read_prompt_file

    records = read_prompt_file(cfg.prompts, cfg.prompt_column, cfg.negative_column, cfg.limit)
    for n, r in enumerate(records, 1):
        longest = max(len(r.prompt), len(r.negative_prompt or ""))
        if longest > cfg.max_chars:
            raise ValueError(f"{cfg.prompts}: prompt {n} has {longest:,} characters; the limit is "
                             f"{cfg.max_chars:,} (--max-chars)")
    return [(r.prompt, r.negative_prompt) for r in records]


def row_texts(cfg: SweepConfig, prompts: list[tuple[str, str | None]], translator) -> list[list[dict]]:
    """Per prompt, per asked row: {strategy, model, text, negative}. Checked for every prompt before any render."""
    from toyworld.world import NotAToyPrompt, oracle

    if "oracle" in cfg.rows and not (presets.pipeline(cfg.source).toy and presets.pipeline(cfg.target).toy):
        raise ValueError("the oracle row needs the toy world's presets (source toy-sd15, target toy-sd2)")
    translations = translator.translate([p for p, _ in prompts], [n for _, n in prompts]) if translator else None
    out = []
    for i, (prompt, negative) in enumerate(prompts):
        rows = []
        for name in cfg.rows:
            model = cfg.source if name == "source" else cfg.target
            text, neg = prompt, negative
            if name == "translation":
                text, neg = translations[i].translated_prompt, translations[i].translated_negative_prompt
            elif name == "oracle":
                try:
                    o = oracle(prompt, negative or "")
                except NotAToyPrompt as err:
                    raise ValueError(f"the oracle row needs toy-world prompts: {err}") from None
                text, neg = o.prompt, o.negative_prompt
            rows.append({"strategy": name, "model": model, "text": text, "negative": neg or ""})
        out.append(rows)
    return out


def seeds_for(cfg: SweepConfig, prompt: str) -> list[int]:
    from bridge.models.render import derive_seed

    return list(cfg.seed_list) if cfg.seed_list else [derive_seed(cfg.seed, prompt, k) for k in range(cfg.seeds)]


def measure_row(row: dict, emb, seeds: list[int], cfg: SweepConfig, index) -> dict:
    """Breadth of one row's renders, and with an index each render's nearest references."""
    row["seeds"] = seeds
    row["breadth"] = B.breadth(emb.numpy(), cfg.cluster_threshold, seed=cfg.seed)
    if index is not None:
        from bridge.sweep.reference import duplicate_report

        near = index.neighbours(emb, cfg.top_k)
        row["nearest"] = [[n.as_dict() for n in ns] for ns in near]
        row["duplicates"] = duplicate_report(near, cfg.duplicate_threshold)
    return row


def sweep_prompt(k: int, prompt: str, negative: str | None, rows: list[dict], caches: dict, cfg: SweepConfig,
                 index) -> tuple[list[dict], list[list]]:
    """Render, measure and save one prompt's rows; returns (rows for sweep.json, images per row)."""
    seeds = seeds_for(cfg, prompt)
    images = []
    for row in rows:
        cache = caches[row["model"]]
        texts, negs = [row["text"]] * len(seeds), [row["negative"]] * len(seeds)
        what = f"prompt {k + 1} {row['strategy']} ({row['model']})"
        imgs = cache.images(texts, seeds, negs, desc=what)
        measure_row(row, cache.embeddings(texts, seeds, negs, desc=what), seeds, cfg, index)
        row.update(prompt_index=k, prompt=prompt, negative_prompt=negative or "", files=[])
        for s, img in zip(seeds, imgs):
            path = cfg.out / "renders" / f"p{k:03d}-{row['strategy']}-{s}.png"
            img.save(path)
            row["files"].append(str(path.relative_to(cfg.out)))
        images.append(imgs)
    base = next((row["breadth"]["mean_distance"] for row in rows if row["strategy"] == "source"), None)
    for row in rows:
        if row["strategy"] != "source" and base is not None:
            row["breadth_ratio"] = B.ratio(row["breadth"]["mean_distance"], base)
    return rows, images


def run_sweep(cfg: SweepConfig, log=print) -> dict:
    from bridge.models.loading import resolve_auto, resolve_device
    from bridge.sweep.reference import ReferenceIndex
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache, render_bar
    from bridge.models.score import Scorer
    from bridge.sweep.grid import grid_image, write_html
    from bridge.translator import Translator

    log = summary_log(cfg, log)
    if resolve_auto(cfg):
        log(presets.TOY_NOTE)
    device = resolve_device(cfg.device)
    # 1. Prompts, the reference index and every row's text, all checked before the first render.
    prompts = load_prompts(cfg)
    index = ReferenceIndex.open(cfg.reference) if cfg.reference is not None else None
    if index is not None:
        index.check_scorer(cfg.scorer)
    translator = Translator.from_pretrained(cfg.adapter, cfg.target, MigrationPolicy.of(cfg), device=device) \
        if "translation" in cfg.rows else None
    texts = row_texts(cfg, prompts, translator)
    # 2. Renders (cached) and measures, prompt by prompt, each grid written as soon as it is done.
    scorer = Scorer(presets.scorer(cfg.scorer), device=device)
    cache_root = cfg.cache_dir or cfg.out / "render-cache"
    caches = {name: RenderCache(cache_root, Renderer(presets.pipeline(name), device=device), scorer,
                                cfg.render_batch, progress=render_bar(cfg.progress)) for name in {cfg.source, cfg.target}}
    (cfg.out / "renders").mkdir(parents=True, exist_ok=True)
    all_rows, grids = [], []
    for k, ((prompt, negative), rows) in enumerate(zip(prompts, texts)):
        rows, images = sweep_prompt(k, prompt, negative, rows, caches, cfg, index)
        grid = cfg.out / f"grid-{k:03d}.png"
        grid_image(rows, images, index, cfg.cell).save(grid)
        grids.append(grid.name)
        all_rows += rows
        log(f"[{k + 1}/{len(prompts)}] {prompt[:60]!r}: " + ", ".join(
            f"{r['strategy']} breadth {r['breadth']['mean_distance']:.3f} ({r['breadth']['clusters']} cluster"
            f"{'s' if r['breadth']['clusters'] != 1 else ''})"
            for r in rows) + f" -> {grid}")
    # 3. sweep.json, index.html and the resolved config.
    report = {"source": presets.describe(presets.pipeline(cfg.source)),
              "target": presets.describe(presets.pipeline(cfg.target)),
              "scorer": presets.describe(presets.scorer(cfg.scorer)), "prompts": len(prompts), "grids": grids,
              "cluster_threshold": cfg.cluster_threshold, "rows": all_rows}
    if index is not None:
        report["reference"] = {"index": str(cfg.reference), "rows": len(index),
                               "duplicate_threshold": cfg.duplicate_threshold}
    atomic_write(cfg.out / "sweep.json", _json(report))
    write_html(cfg.out, report, index)
    save_config(cfg, cfg.out, presets={"source": report["source"], "target": report["target"],
                                       "scorer": report["scorer"]})
    log(f"sweep: {len(prompts)} prompt(s) x {len(cfg.rows)} row(s) x {cfg.seeds} seeds -> {cfg.out / 'index.html'}")
    print_json_summary(cfg, {"out": str(cfg.out), "prompts": len(prompts), "grids": grids,
                             "rows": [{k: r[k] for k in ("prompt_index", "strategy", "model", "breadth")}
                                      | ({"breadth_ratio": r["breadth_ratio"]} if "breadth_ratio" in r else {})
                                      for r in all_rows]})
    return report


def _json(report: dict) -> str:
    import json
    import math

    def clean(v):  # NaN (one seed) is not JSON: write null
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, ensure_ascii=False) + "\n"
