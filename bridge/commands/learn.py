"""`sd-bridge learn LIBRARY --out DIR`: a bridge trained on the user's own library in one command.

    0. plan      renders per stage, the estimated time on this device, peak memory and disk; `--dry-run` stops
                 here (offline, no weights loaded: rates from bridge/models/configs/render_rates.json and the
                 parameter counts of the committed architectures or the models' own files)
    1. prepare   the library read as `migrate` reads it, cleaned, split by meaning into train and held-out
    2. gather    source renders of the train prompts (data/gather.py)
    3. train     GRPO, the recipe the toy world supports (benchmarks/toyworld_learning.py), at the budget's size
    4. eval      identity, syntax and the adapter on the held-out prompts (eval/run.py): DIR/report/
    5. export    the adapter merged and converted (int8 ctranslate2 on CPU, fp16 on CUDA): DIR/export/
    6. card      DIR/README.md: what was trained on what, the held-out result, how to use it

Each stage is resumable and done stages are skipped: a killed run, rerun with the same command, goes on where
it stopped (gather by shard, train from its last checkpoint). DIR/learn.json records the settings; a rerun with
others is refused, naming the setting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.config import first_difference, json_summary_field, plan_lines, print_json_summary, summary_log
from bridge.files import atomic_write
from bridge.models import presets

__all__ = ["LearnConfig", "run_learn", "BUDGETS"]

# Budget -> (train prompts at most, seeds per prompt, GRPO steps, held-out prompts at most). The recipe around it
# is the toy world's (benchmarks/toyworld_learning.py): 8 prompts a step, 4 candidates, one reward seed, lr 1e-3.
BUDGETS = {"small": (120, 2, 40, 16), "medium": (1000, 2, 200, 64), "large": (5000, 2, 1000, 200)}
PROMPTS_PER_STEP, K, REWARD_SEEDS, LR = 8, 4, 1, 1e-3
KINDS = {"source": "pipeline", "target": "pipeline", "scorer": "scorer", "rewriter": "rewriter"}
STAGES = ("prepare", "gather", "train", "eval", "export", "card")
STRATEGIES = 3  # identity, syntax, the adapter
RATES = Path(__file__).resolve().parents[1] / "models" / "configs" / "render_rates.json"


@dataclass
class LearnConfig:
    """Train a bridge on your own prompt library: prepare, gather, train, eval, export, in one resumable run."""

    # What to learn from
    library: Path | None = field(default=None, metadata={"help": "prompt library (.txt, .csv, .tsv, .jsonl, "
                                                                  ".parquet)", "positional": "?"})
    prompt_column: str = field(default="prompt", metadata={"help": "column/key of the prompt"})
    negative_column: str | None = field(default=None, metadata={
        "help": "column/key of the negative prompt (default: `negative_prompt` when present)"})
    heldout: float = field(default=0.1, metadata={"help": "share of the library's meanings held out for the report"})
    # The models
    source: str = field(default=presets.DEFAULT_SOURCE, metadata={"help": "the model the library was written for"})
    target: str = field(default=presets.DEFAULT_TARGET, metadata={"help": "the model to translate for"})
    scorer: str = field(default="auto", metadata={"help": "scorer (auto: the toy or tiny world's for its pipelines, "
                                                          f"else {presets.DEFAULT_SCORER})"})
    rewriter: str = field(default="auto", metadata={"help": "rewriter (auto: the toy or tiny world's for its "
                                                            f"pipelines, else {presets.DEFAULT_REWRITER})"})
    # How much
    budget: str = field(default="small", metadata={"help": "small (120 prompts, 40 steps), medium (1,000, 200), "
                                                           "large (5,000, 1,000), or N target renders for "
                                                           "training"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    # Where and how
    out: Path | None = field(default=None, metadata={"help": "output directory"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    dry_run: bool = field(default=False, metadata={"help": "print the plan and stop, loading no model"})
    progress: bool = field(default=True, metadata={"help": "progress bars", "off_help": "no progress bars (for logs)"})
    json: bool = json_summary_field()

    def __post_init__(self):
        if self.library is None:
            raise ValueError("give the prompt library to learn from: sd-bridge learn LIBRARY --out DIR")
        self.library = Path(self.library)
        if not self.library.is_file():
            raise ValueError(f"library not found: {self.library}")
        if self.out is None and not self.dry_run:
            raise ValueError("--out is required (the directory for the adapter, report and export)")
        self.out = None if self.out is None else Path(self.out)
        if not 0 < self.heldout < 1:
            raise ValueError(f"heldout must be between 0 and 1, got {self.heldout}")
        self.budget = str(self.budget)
        if self.budget not in BUDGETS and not (self.budget.isdigit() and int(self.budget) >= PROMPTS_PER_STEP * K):
            raise ValueError(f"budget must be small, medium, large or a number of target renders >= "
                             f"{PROMPTS_PER_STEP * K}, got {self.budget!r}")
        source, target = presets.pipeline(self.source), presets.pipeline(self.target)
        world = "toy" if source.toy and target.toy else "tiny" if source.tiny and target.tiny else None
        if self.scorer == "auto":
            self.scorer = {"toy": presets.TOY_SCORER, "tiny": presets.TINY_SCORER}.get(world, presets.DEFAULT_SCORER)
        if self.rewriter == "auto":
            self.rewriter = {"toy": presets.TOY_REWRITER, "tiny": presets.TINY_REWRITER}.get(
                world, presets.DEFAULT_REWRITER)
        presets.scorer(self.scorer), presets.rewriter(self.rewriter)

    def sizes(self) -> tuple[int, int, int, int]:
        """(train prompts at most, seeds, steps, held-out prompts at most) of the budget."""
        if self.budget in BUDGETS:
            return BUDGETS[self.budget]
        # N target renders: each training prompt met about once, a held-out prompt for every eight.
        steps = max(1, int(self.budget) // (PROMPTS_PER_STEP * K * REWARD_SEEDS))
        prompts = min(BUDGETS["large"][0], steps * PROMPTS_PER_STEP)
        return prompts, 2, steps, min(BUDGETS["large"][3], max(4, prompts // 8))

    def settings(self) -> dict:
        """What decides the result: a rerun into the same --out must agree on all of it."""
        skip = {"out", "device", "dry_run", "progress", "json"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items() if k not in skip}


# ------------------------------------------------------------------------------------------- 1. prepare
def meaning_key(prompt: str) -> str:
    """What a prompt says, without how: lower case, no network or embedding tags, no weights or brackets, its
    words as a sorted set. "a (red:1.2) fox" and "a red fox, <lora:x:1>" share a key, so paraphrases of one
    meaning land in the same split and the held-out score is not a memory test."""
    text = re.sub(r"<[^>]*>", " ", prompt.lower())
    text = re.sub(r":\s*-?[\d.]+", " ", text)  # weights and prompt-editing steps, not the numbers of a subject
    words = re.findall(r"[^\W_]+", text)
    return " ".join(sorted(set(words) - {"break", "and"}))


def split(records: list, heldout: float, seed: int) -> tuple[list, list]:
    """(train, held-out) by a hash of each record's meaning: stable across runs and machines."""
    train, held = [], []
    for rec in records:
        digest = hashlib.sha256(f"{seed}:{meaning_key(rec.prompt)}".encode()).digest()
        (held if int.from_bytes(digest[:8], "big") / 2**64 < heldout else train).append(rec)
    return train, held


def prepare(cfg: LearnConfig) -> tuple[list, list, dict]:
    from bridge.io.clean import clean_records
    from bridge.io.sources import read_records

    records, report = clean_records(read_records(str(cfg.library), cfg.prompt_column, cfg.negative_column))
    if not records:
        raise ValueError(f"no prompts in {cfg.library} after cleaning ({report.to_dict()['dropped']})")
    train, held = split(records, cfg.heldout, cfg.seed)
    n_train, _, _, n_held = cfg.sizes()
    if not train or not held:
        raise ValueError(f"{cfg.library} has {len(records)} prompt(s) after cleaning: too few to hold "
                         f"{cfg.heldout:.0%} of their meanings out and train on the rest")
    return train[:n_train], held[:n_held], report.to_dict()


def _write_prompts(path: Path, records: list) -> None:
    atomic_write(path, "".join(json.dumps({"prompt": r.prompt, "negative_prompt": r.negative_prompt},
                                          ensure_ascii=False) + "\n" for r in records))


# ------------------------------------------------------------------------------------------- 0. plan
def parameters(kind: str, name: str) -> int:
    """A preset's parameter count without loading it: the committed architecture of a real preset, else the
    tensor tables of its own safetensors files."""
    from bridge.models.architectures import CONFIGS, parameter_counts
    from bridge.models.loading import model_dir
    from bridge.models.rewriter import check_safetensors

    preset = presets.get_preset(kind, name)
    if (CONFIGS / f"{preset.name}.json").is_file():
        return sum(parameter_counts(preset.name).values())
    return sum(math.prod(tensor["shape"]) for file in model_dir(preset).rglob("*.safetensors")
               for tensor in check_safetensors(file).values())


def render_rate(name: str, device: str) -> float | None:
    """Seconds per image for preset `name` on this kind of device, from the committed table of measured rates
    (bridge/models/configs/render_rates.json, written by benchmarks), or None."""
    table = json.loads(RATES.read_text(encoding="utf-8")) if RATES.is_file() else {"seconds_per_image": {}}
    return table["seconds_per_image"].get("cuda" if device.startswith("cuda") else "cpu", {}).get(name)


def plan(cfg: LearnConfig, n_train: int, n_held: int, device: str, rates: dict | None = None) -> dict:
    """What the run will do and cost. `rates` (seconds per image by preset) are measured warm-up renders;
    without them, the committed table's."""
    _, seeds, steps, _ = cfg.sizes()
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    source_renders = (n_train + n_held) * seeds
    train_renders = steps * min(PROMPTS_PER_STEP, n_train) * K * REWARD_SEEDS
    target_renders = train_renders + n_held * seeds * STRATEGIES
    rates = rates or {}
    rate = {p.name: rates.get(p.name, render_rate(p.name, device)) for p in (source, target)}
    seconds = None
    if all(r is not None for r in rate.values()):
        seconds = round((source_renders * rate[source.name] + target_renders * rate[target.name]) / processes, 1)
    from bridge.models.loading import resolve_dtype

    counts = {k: parameters(kind, getattr(cfg, k)) for k, kind in KINDS.items()}
    # Bytes per parameter as the loaders load each model here (fp16 pipelines on CUDA, fp32 otherwise).
    weights = {k: n * resolve_dtype("auto", device, KINDS[k]).itemsize / 2**30 for k, n in counts.items()}
    # Models in memory at once per stage (each process holds its own copy); x1.25 for activations and buffers.
    peak = max(weights["source"] + weights["scorer"], weights["target"] + weights["scorer"] + weights["rewriter"],
               weights["source"] + weights["target"] + weights["scorer"] + weights["rewriter"]) * 1.25
    pixels = max(source.size, target.size) ** 2
    disk = ((source_renders + target_renders) * pixels * 3 * 0.6  # PNG of a render, about 60% of its raw bytes
            + counts["rewriter"] * (1 if not device.startswith("cuda") else 2)) / 2**30  # the int8 / fp16 export
    return {"library": str(cfg.library), "train_prompts": n_train, "heldout_prompts": n_held, "seeds": seeds,
            "steps": steps, "processes": processes, "device": device,
            "source_renders": source_renders, "target_renders": target_renders,
            "seconds_per_render": rate, "rates_from": {n: "warm-up renders" if n in rates else "table" for n in rate},
            "estimated_seconds": seconds, "peak_memory_gb": round(peak, 3), "disk_gb": round(disk, 3),
            "stages": list(STAGES)}


WARM_UP_BATCH = 4  # the stages render 4 images per pipeline call (their --render-batch default)


def warm_up_rates(cfg: LearnConfig, device: str) -> dict:
    """Seconds per image of source and target on this device: the committed table's where it has the preset,
    else measured on a warm-up call and a timed call of WARM_UP_BATCH images."""
    from bridge.models.render import Renderer

    rates = {}
    for name in dict.fromkeys((cfg.source, cfg.target)):
        if render_rate(name, device) is not None:
            continue
        renderer = Renderer(presets.pipeline(name), device=device)
        seeds = list(range(WARM_UP_BATCH))
        renderer(["a warm-up render"] * WARM_UP_BATCH, seeds, batch_size=WARM_UP_BATCH)
        started = time.perf_counter()
        renderer(["a warm-up render"] * WARM_UP_BATCH, [s + WARM_UP_BATCH for s in seeds], batch_size=WARM_UP_BATCH)
        rates[name] = round((time.perf_counter() - started) / WARM_UP_BATCH, 4)
    return rates


# ------------------------------------------------------------------------------------------- the run
def check_settings(cfg: LearnConfig) -> None:
    """A rerun into the same --out must have the settings of the run that made it."""
    path = cfg.out / "learn.json" if cfg.out is not None else None
    if path is None or not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))["settings"]
    diff = first_difference(before, cfg.settings(), keys=sorted(set(before) | set(cfg.settings())))
    if diff is not None:
        key, old, new = diff
        raise ValueError(f"{cfg.out} holds a learn run with {key}={old!r}; this run has {key}={new!r}: rerun with "
                         f"the same settings to resume, or choose another --out")


def run_learn(cfg: LearnConfig, log=print) -> dict:
    from bridge.models.loading import resolve_device

    # Under `accelerate launch` every process runs every stage (gather, train and eval share their work out);
    # the main process alone says the plan and writes the run's own files, the others wait at each stage's end.
    main = _is_main()
    log = summary_log(cfg, log) if main else (lambda *_: None)
    device = resolve_device(cfg.device)
    check_settings(cfg)
    # 1. Prepare (read, clean, split): cheap, and the plan needs its counts.
    train, held, cleaned = prepare(cfg)
    if cfg.dry_run:
        the_plan = plan(cfg, len(train), len(held), device)
        _say_plan(cfg, the_plan, log)
        return the_plan
    cfg.out.mkdir(parents=True, exist_ok=True)
    state_path = cfg.out / "learn.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {
        "settings": cfg.settings(), "done": [], "seconds": {}}
    if main:
        atomic_write(state_path, json.dumps(state, indent=2) + "\n")
    # 0. The plan, its time from renders measured here.
    the_plan = plan(cfg, len(train), len(held), device, warm_up_rates(cfg, device))
    _say_plan(cfg, the_plan, log)
    if state["done"]:
        log(f"resuming {cfg.out}: done {', '.join(state['done'])}")
    stages = {"prepare": lambda: _prepare(cfg, train, held, cleaned), "gather": lambda: _gather(cfg, device, log),
              "train": lambda: _train(cfg, device, log), "eval": lambda: _eval(cfg, device, log),
              "export": lambda: _export(cfg, device, log), "card": lambda: _card(cfg, the_plan)}
    for name in STAGES:
        if name in state["done"]:
            continue
        log(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}")
        started = time.perf_counter()
        if main or name in ("gather", "train", "eval"):
            stages[name]()
        _wait_for_everyone(device)
        state["done"].append(name)
        state["seconds"][name] = round(time.perf_counter() - started, 1)
        if main:
            atomic_write(state_path, json.dumps(state, indent=2) + "\n")
    if not main:
        return {}
    report = json.loads((cfg.out / "report" / "report.json").read_text(encoding="utf-8"))
    adapter = next(k for k in report["strategies"] if k.startswith("adapter:"))
    summary = {"out": str(cfg.out), "adapter": str(cfg.out / "adapter"), "export": str(cfg.out / "export"),
               "report": str(cfg.out / "report" / "report.html"), "card": str(cfg.out / "README.md"),
               "heldout_prompts": report["prompts"],
               "agreement": {k: round(v["agreement_mean"], 4) for k, v in report["strategies"].items()},
               "vs_identity": report["strategies"][adapter]["vs_identity"]["delta_mean"],
               "seconds": state["seconds"]}
    log(f"learned: {summary['export']} (use it: sd-bridge migrate LIBRARY --adapter {summary['export']}); "
        f"held-out agreement vs identity {summary['vs_identity']:+.4f}; report {summary['report']}")
    print_json_summary(cfg, summary)
    return summary


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0  # as bridge.cli decides who holds the output lock


def _wait_for_everyone(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        import torch
        from accelerate import PartialState

        # The state the stages make (gather, eval: PartialState(cpu=...)): made first here with another `cpu`,
        # accelerate gave the stages a state in which every process was the main one, and both merged the shards.
        PartialState(cpu=device == "cpu" or not torch.cuda.is_available()).wait_for_everyone()


def _say_plan(cfg: LearnConfig, the_plan: dict, log) -> None:
    if cfg.json and cfg.dry_run:
        print_json_summary(cfg, the_plan)
        return
    log("plan:")
    for line in plan_lines({k: v for k, v in the_plan.items() if k != "stages"}, "  "):
        log(line)


def _prepare(cfg: LearnConfig, train: list, held: list, cleaned: dict) -> None:
    folder = cfg.out / "prompts"
    folder.mkdir(exist_ok=True)
    _write_prompts(folder / "train.jsonl", train)
    _write_prompts(folder / "heldout.jsonl", held)
    atomic_write(folder / "clean.json", json.dumps({**cleaned, "train": len(train), "heldout": len(held)}) + "\n")


def _gather(cfg: LearnConfig, device: str, log) -> None:
    from data.gather import GatherConfig, run_gather

    _, seeds, _, _ = cfg.sizes()
    run_gather(GatherConfig(prompts=str(cfg.out / "prompts" / "train.jsonl"), out=cfg.out / "gather",
                            preset=cfg.source, scorer=cfg.scorer, seeds=seeds, seed=cfg.seed, device=device,
                            progress=cfg.progress), log=log)


def _train(cfg: LearnConfig, device: str, log) -> None:
    from training.checkpoints import checkpoints
    from training.config import TrainConfig
    from training.trainer import run_train

    _, _, steps, _ = cfg.sizes()
    out = cfg.out / "adapter"
    resume = "latest" if out.is_dir() and checkpoints(out) else None
    if resume is None and _is_main():
        shutil.rmtree(out, ignore_errors=True)  # a run killed before its first checkpoint: start it again
    _wait_for_everyone(device)  # no process may start writing before the main one has cleared the way
    # flan-t5 is warmed up towards copying its input first; the toy and tiny rewriters already copy.
    rewriter = presets.rewriter(cfg.rewriter)
    run_train(TrainConfig(data=cfg.out / "gather", out=out, target=cfg.target, rewriter=cfg.rewriter,
                          scorer=cfg.scorer, steps=steps, prompts_per_step=PROMPTS_PER_STEP, k=K, lr=LR,
                          reward_seeds=REWARD_SEEDS, warm_start_steps=0 if rewriter.toy or rewriter.tiny else 100,
                          checkpoint_every=max(1, steps // 4), resume=resume, seed=cfg.seed, device=device,
                          progress=cfg.progress), log=log)


def _eval(cfg: LearnConfig, device: str, log) -> None:
    from eval.config import EvalConfig
    from eval.run import run_eval

    _, seeds, _, _ = cfg.sizes()
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    run_eval(EvalConfig(prompts=str(cfg.out / "prompts" / "heldout.jsonl"), out=cfg.out / "report",
                        source=cfg.source, target=cfg.target, scorer=cfg.scorer, adapter=[cfg.out / "adapter"],
                        oracle=source.toy and target.toy, seeds=seeds, seed=cfg.seed, device=device,
                        cache_dir=cfg.out / "render-cache", progress=cfg.progress), log=log)


def _export(cfg: LearnConfig, device: str, log) -> None:
    from bridge.commands.export import ExportConfig, run_export

    cuda = device.startswith("cuda")
    run_export(ExportConfig(adapter=cfg.out / "adapter", out=cfg.out / "export", backend="ctranslate2",
                            quantize="fp16" if cuda else "int8", overwrite=True), log=log)


def _card(cfg: LearnConfig, the_plan: dict) -> None:
    report = json.loads((cfg.out / "report" / "report.json").read_text(encoding="utf-8"))
    rows = "\n".join(f"| {name} | {s['agreement_mean']:.4f} [{s['agreement_ci95'][0]:.4f}, {s['agreement_ci95'][1]:.4f}]"
                     f" | {s['vs_identity']['delta_mean']:+.4f} |" for name, s in report["strategies"].items())
    card = f"""# A bridge from {cfg.source} to {cfg.target}, learned from {cfg.library.name}

Trained by `sd-bridge learn` (budget {cfg.budget}): {the_plan['train_prompts']} prompts of the library, split from
{the_plan['heldout_prompts']} held out by meaning, rendered with {cfg.source} at {the_plan['seeds']} seeds; a LoRA
on {cfg.rewriter} trained with GRPO for {the_plan['steps']} steps so that {cfg.target}'s renders of its rewrites
agree, in {cfg.scorer}'s image space, with {cfg.source}'s renders of the originals.

## On the held-out prompts (agreement with the source render, mean and 95% interval)

| strategy | agreement | vs identity |
|---|---|---|
{rows}

The full report: `report/report.html`. The adapter: `adapter/` (its own card is `adapter/README.md`).

## Use it

```bash
sd-bridge translate "your prompt" --adapter {cfg.out / 'export'}
sd-bridge migrate LIBRARY --adapter {cfg.out / 'export'} --out LIBRARY-{cfg.target}.jsonl
sd-bridge serve --adapter {cfg.out / 'export'}
```
"""
    atomic_write(cfg.out / "README.md", card)
