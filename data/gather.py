"""`sd-bridge gather`: source-model prompt/image pairs as a resumable, shardable Hugging Face dataset.

Steps (DESIGN §2, §4): read prompts -> clean -> plan shards -> render each (prompt, seed) with the SOURCE
preset -> embed the images with the scorer -> write shard files atomically -> merge into a dataset that
`datasets.load_from_disk(OUT)` opens, with the resolved config, `summary.json` and a contact sheet beside it.

Crash safety: the unit of work is a shard (a fixed slice of the cleaned prompt list, all its seeds). A
shard is written to a temporary file and renamed into place, so it either exists whole or not at all; a
rerun with the same arguments skips existing shards. Seeds derive from (base seed, prompt, k) and a
shard's batches do not depend on the process count, so a resumed or multi-process run writes the same
rows and images as an uninterrupted single-process one.

Scale-out: under `accelerate launch --num_processes N`, process r renders shards r, r+N, ...; the main
process merges once all shards exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.models import presets
from bridge.config import first_difference, json_summary_field, log_plan, print_json_summary, save_config, summary_log
from bridge.files import atomic_write, remove_stale_temps

PLAN = "plan.json"
WORK = ".gather"


@dataclass
class GatherConfig:
    """Render prompts with the source model at fixed seeds and store images + scorer embeddings as a dataset."""

    prompts: str | None = field(default=None, metadata={"help": "prompt file (.txt/.csv/.tsv/.jsonl/.parquet), a "
                                                                 "folder of A1111 PNGs, or a HF dataset name"})
    out: Path | None = field(default=None, metadata={"help": "output directory (the dataset)"})
    preset: str = field(default=presets.DEFAULT_SOURCE, metadata={"help": "source pipeline preset or local directory"})
    scorer: str = field(default=presets.DEFAULT_SCORER, metadata={"help": "scorer preset for the image embeddings"})
    seeds: int = field(default=2, metadata={"help": "images per prompt (seeds derive from --seed and the prompt)"})
    seed: int = field(default=0, metadata={"help": "base seed"})
    revision: str | None = field(default=None, metadata={"help": "pin the source preset's hub revision"})
    format: str = field(default="auto", metadata={"help": "source format: auto, txt, csv, tsv, jsonl, parquet, png, hf"})
    prompt_column: str = field(default="prompt", metadata={"help": "column/key holding the prompt"})
    negative_column: str | None = field(default=None, metadata={
        "help": "column/key holding the negative prompt (default: `negative_prompt` when present)"})
    split: str = field(default="train", metadata={"help": "split, for a HF dataset"})
    ignore_negative: bool = field(default=False, metadata={"help": "render without the negative prompts"})
    min_tokens: int = field(default=1, metadata={"help": "drop prompts with fewer CLIP tokens"})
    max_tokens: int | None = field(default=None, metadata={"help": "drop prompts with more CLIP tokens"})
    deny_list: Path | None = field(default=None, metadata={"help": "file of terms (one per line) whose prompts are dropped"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts after cleaning"})
    steps: int | None = field(default=None, metadata={"help": "denoising steps (default: the preset's)"})
    guidance: float | None = field(default=None, metadata={"help": "CFG scale (default: the preset's)"})
    size: int | None = field(default=None, metadata={"help": "square image size (default: the preset's)"})
    scheduler: str | None = field(default=None, metadata={"help": "sampler (default: the preset's)"})
    weighting: Literal["a1111", "plain"] = field(default="a1111", metadata={
        "help": "a1111: weights/BREAK/long prompts encoded as A1111 does; plain: text to diffusers as is"})
    batch_size: int = field(default=4, metadata={"help": "images per pipeline call"})
    shard_prompts: int = field(default=16, metadata={"help": "prompts per shard (the unit of resume)"})
    contact_sheet: int = field(default=8, metadata={"help": "prompts shown in contact_sheet.png"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    dtype: str = field(default="auto", metadata={"help": "auto (fp16 on CUDA, else fp32), fp32, fp16, bf16"})
    dry_run: bool = field(default=False, metadata={"help": "report counts, render nothing"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "off_help": "no progress bar (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("--prompts is required (a prompt file, a folder of PNGs or a HF dataset name)")
        if self.out is None:
            raise ValueError("--out is required (the dataset directory)")
        self.out = Path(self.out)
        for name in ("seeds", "batch_size", "shard_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")
        presets.pipeline(self.preset, self.revision)
        presets.scorer(self.scorer)


def features():
    import datasets

    return datasets.Features({
        "prompt": datasets.Value("string"),
        "negative_prompt": datasets.Value("string"),
        "seed": datasets.Value("int64"),
        "seed_index": datasets.Value("int32"),
        "prompt_index": datasets.Value("int64"),
        "origin": datasets.Value("string"),
        "image": datasets.Image(),
        "embedding": datasets.Sequence(datasets.Value("float32")),
        "preset": datasets.Value("string"),
        "revision": datasets.Value("string"),
        "scorer": datasets.Value("string"),
        "settings": datasets.Value("string"),
    })


def load_prompts(cfg: GatherConfig):
    """Read and clean the prompts (every process does this; it is deterministic)."""
    from bridge.io.clean import clean_records, load_deny_list
    from bridge.io.sources import read_records

    deny = load_deny_list(cfg.deny_list) if cfg.deny_list else None
    records = read_records(cfg.prompts, cfg.prompt_column, cfg.negative_column, cfg.format, cfg.split)
    kept, report = clean_records(records, cfg.min_tokens, cfg.max_tokens, deny, cfg.ignore_negative)
    if report.read == 0:
        raise ValueError(f"no prompts in {cfg.prompts}")
    if cfg.limit is not None:
        kept = kept[: cfg.limit]
    if not kept:
        raise ValueError(f"every prompt in {cfg.prompts} was dropped by cleaning: {report.to_dict()['dropped']}")
    return kept, report


def plan_key(cfg: GatherConfig, records, settings: dict) -> str:
    """The hash older gathers recorded in place of a fingerprint; only compared with such a plan."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps([rec.prompt, rec.negative_prompt]).encode())
    h.update(json.dumps([cfg.seeds, cfg.seed, cfg.preset, cfg.revision, cfg.scorer, cfg.shard_prompts, settings],
                        sort_keys=True).encode())
    return h.hexdigest()


def plan_fingerprint(cfg: GatherConfig, records, settings: dict, dtype: str) -> dict:
    """What decides the rows, setting by setting (the resolved dtype included: fp16 and fp32 renders differ),
    so a rerun that differs is refused with the setting named."""
    prompts = hashlib.sha256()
    for rec in records:
        prompts.update(json.dumps([rec.prompt, rec.negative_prompt]).encode())
    return {"prompts": prompts.hexdigest(), "seeds": cfg.seeds, "seed": cfg.seed, "preset": cfg.preset,
            "revision": cfg.revision, "scorer": cfg.scorer, "shard_prompts": cfg.shard_prompts,
            **{f"render.{k}": v for k, v in sorted(settings.items())}, "dtype": dtype}


def check_plan(cfg: GatherConfig, saved: dict, records, settings: dict, fingerprint: dict) -> None:
    """Refuse to resume a gather made with other prompts or settings, naming the first that differs."""
    if "fingerprint" in saved:
        diff = first_difference(saved["fingerprint"], fingerprint)
        if diff is not None:
            name, before, now = diff
            raise ValueError(f"{cfg.out} holds a gather with other prompts or settings ({name}: {before!r} there, "
                             f"{now!r} now); use a new --out (or delete {cfg.out}) to start over")
    elif saved["key"] != plan_key(cfg, records, settings):  # a plan written before fingerprints were recorded
        raise ValueError(f"{cfg.out} holds a gather with other prompts or settings; use a new --out "
                         f"(or delete {cfg.out}) to start over")


def render_shard(records, first_index: int, cfg: GatherConfig, renderer, scorer, source, settings_json: str,
                 on_images=None) -> bytes:
    """Render one shard; return it as Parquet bytes (rows ordered by prompt, then seed)."""
    import datasets

    from bridge.models.render import derive_seed

    jobs = [(i, rec, k, derive_seed(cfg.seed, rec.prompt, k))
            for i, rec in enumerate(records, first_index) for k in range(cfg.seeds)]
    images = renderer([j[1].prompt for j in jobs], [j[3] for j in jobs], [j[1].negative_prompt for j in jobs],
                      batch_size=cfg.batch_size, on_batch=on_images)
    embeddings = scorer.embed_images(images).tolist()
    rows = {name: [] for name in features()}
    for (index, rec, k, seed), image, emb in zip(jobs, images, embeddings):
        png = io.BytesIO()
        image.save(png, format="PNG")
        rows["prompt"].append(rec.prompt)
        rows["negative_prompt"].append(rec.negative_prompt)
        rows["seed"].append(seed)
        rows["seed_index"].append(k)
        rows["prompt_index"].append(index)
        rows["origin"].append(rec.origin)
        rows["image"].append({"bytes": png.getvalue(), "path": None})
        rows["embedding"].append(emb)
        rows["preset"].append(source.name)
        rows["revision"].append(source.revision)
        rows["scorer"].append(scorer.preset.name)
        rows["settings"].append(settings_json)
    buf = io.BytesIO()
    datasets.Dataset.from_dict(rows, features=features()).to_parquet(buf)
    return buf.getvalue()


def merge(out: Path, shard_files: list[Path]) -> int:
    """All shards -> one dataset in `out` (datasets' save_to_disk layout), replacing any earlier merge."""
    import datasets

    tmp = out / WORK / "merge"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    ds = datasets.Dataset.from_parquet([str(f) for f in shard_files], features=features(),
                                       cache_dir=str(out / WORK / "cache"))
    ds.save_to_disk(str(tmp))
    state = json.loads((tmp / "state.json").read_text())
    keep = {f["filename"] for f in state["_data_files"]}
    for old in out.glob("data-*.arrow"):
        if old.name not in keep:
            old.unlink()
    for name in sorted(keep) + ["dataset_info.json", "state.json"]:  # state.json last: it names the files
        os.replace(tmp / name, out / name)
    return len(ds)


def run_gather(cfg: GatherConfig, log=print, renderer=None, scorer=None) -> dict:
    """Run a gather. `renderer`/`scorer` may be passed already loaded (the demo and benchmarks reuse
    theirs); they must match cfg.preset/cfg.scorer."""
    from accelerate import PartialState

    from bridge.models.loading import resolve_device, resolve_dtype
    from bridge.models.render import Renderer, RenderSettings
    from bridge.models.score import Scorer

    import torch

    # cpu=True lets `accelerate launch --multi_gpu --num_processes N` (torchrun) split work across CPU
    # processes with gloo; on GPUs each process takes its own device.
    state = PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    started = time.perf_counter()
    log = summary_log(cfg, log)
    # 1. Prompts: read and clean.
    records, report = load_prompts(cfg)
    source = presets.pipeline(cfg.preset, cfg.revision)
    settings = RenderSettings.for_preset(source, cfg.steps, cfg.guidance, cfg.size, cfg.scheduler, cfg.weighting)
    settings_json = json.dumps(settings.as_dict(), sort_keys=True)
    n_shards = -(-len(records) // cfg.shard_prompts)
    work = cfg.out / WORK
    shard_path = [work / f"shard-{k:05d}.parquet" for k in range(n_shards)]
    todo = [k for k in range(n_shards) if not shard_path[k].exists()]
    counts = {"prompts": len(records), "seeds": cfg.seeds, "renders": len(records) * cfg.seeds, "shards": n_shards,
              "shards_done": n_shards - len(todo), "renders_left": sum(
                  len(records[k * cfg.shard_prompts : (k + 1) * cfg.shard_prompts]) for k in todo) * cfg.seeds,
              "cleaning": report.to_dict()}
    # 2. Dry run: counts only.
    if cfg.dry_run:
        if state.is_main_process:
            log_plan(cfg, log, counts)
        return counts
    # 3. The plan must match an earlier run in the same directory, or resuming would mix two datasets.
    device = str(state.device) if cfg.device == "auto" and state.num_processes > 1 else resolve_device(cfg.device)
    fingerprint = plan_fingerprint(cfg, records, settings.as_dict(),
                                   str(resolve_dtype(cfg.dtype, device)).removeprefix("torch."))
    if state.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        plan_file = work / PLAN
        if plan_file.exists():
            check_plan(cfg, json.loads(plan_file.read_text()), records, settings.as_dict(), fingerprint)
            remove_stale_temps(work)  # a shard half-written when a run was killed
        atomic_write(plan_file, json.dumps({"shards": n_shards, "fingerprint": fingerprint}))
    state.wait_for_everyone()
    # 4. Render this process's shards.
    mine = [k for k in todo if k % state.num_processes == state.process_index]
    if renderer is None or renderer.preset != source or renderer.settings != settings:
        renderer = Renderer(source, settings, device=device, dtype=cfg.dtype)
    if scorer is None or scorer.preset != presets.scorer(cfg.scorer):
        scorer = Scorer(presets.scorer(cfg.scorer), device=device)
    bar = _progress(cfg, state, sum(len(records[k * cfg.shard_prompts : (k + 1) * cfg.shard_prompts]) for k in mine)
                    * cfg.seeds)
    for k in mine:
        lo = k * cfg.shard_prompts
        data = render_shard(records[lo : lo + cfg.shard_prompts], lo, cfg, renderer, scorer, source, settings_json,
                            on_images=bar.update)
        atomic_write(shard_path[k], data)
    bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return counts
    # 5. Merge, then the files beside the dataset.
    missing = [p.name for p in shard_path if not p.exists()]
    if missing:
        raise RuntimeError(f"shards missing after rendering: {missing[:5]}; rerun the same command to finish")
    rows = merge(cfg.out, shard_path)
    seconds = time.perf_counter() - started
    summary = {**counts, "rows": rows, "seconds": round(seconds, 2),
               "renders_per_s": round(counts["renders_left"] / seconds, 3) if counts["renders_left"] else None,
               "processes": state.num_processes, "dataset": str(cfg.out),
               "source": presets.describe(source), "scorer": presets.describe(scorer.preset),
               "settings": settings.as_dict()}
    atomic_write(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    save_config(cfg, cfg.out, presets={"source": presets.describe(source), "scorer": presets.describe(scorer.preset)},
                settings=settings.as_dict())
    contact_sheet(cfg.out, cfg.contact_sheet, cfg.seeds)
    log(f"gathered {rows} rows ({counts['prompts']} prompts x {cfg.seeds} seeds) into {cfg.out} "
        f"in {seconds:.1f}s; dropped by cleaning: {report.to_dict()['dropped'] or 'none'}")
    log(f"contact sheet: {cfg.out / 'contact_sheet.png'}")
    print_json_summary(cfg, summary)
    return summary


def _progress(cfg: GatherConfig, state, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="render", desc=f"gather[{state.process_index}]", position=state.process_index,
                disable=not cfg.progress or total == 0, dynamic_ncols=True)


def contact_sheet(out: Path, n_prompts: int, seeds: int) -> Path:
    import datasets

    from bridge.io.images import captioned_grid

    ds = datasets.load_from_disk(str(out))
    first = ds.select(range(min(len(ds), n_prompts * seeds)))
    rows, captions = [], []
    for row in first:
        if row["seed_index"] == 0:
            rows.append([])
            captions.append(row["prompt"])
        rows[-1].append(row["image"])
    path = out / "contact_sheet.png"
    captioned_grid(rows, captions, [f"seed {k}" for k in range(seeds)]).save(path)
    return path
