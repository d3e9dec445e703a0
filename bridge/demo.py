"""`sd-bridge demo`: the main job on the embedded tiny presets, offline, in well under two minutes.

Gathers real prompts from ../shared/prompts with the source preset (images + scorer embeddings, as
`sd-bridge gather` does), renders the same prompts and seeds with the target, scores how much the target's
images agree with the stored source images in the scorer's CLIP space, and writes a side-by-side PNG, a
summary and the resolved config. The stage issues extend it until it runs gather -> train -> eval ->
translate end to end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge import presets
from bridge.config import save_config


@dataclass
class DemoConfig:
    """Run the bridge end to end on tiny offline models and write a side-by-side PNG."""

    out: Path = field(default=Path("demo-out"), metadata={"help": "output directory"})
    prompts: Path | None = field(default=None, metadata={"help": "prompt file (any format gather reads; "
                                                                  "default: ../shared/prompts/plain.jsonl)"})
    num_prompts: int = field(default=4, metadata={"help": "how many prompts to render"})
    seeds: int = field(default=2, metadata={"help": "seeds per prompt (the same seeds for source and target)"})
    seed: int = field(default=0, metadata={"help": "base seed from which per-prompt seeds derive"})
    source: str = field(default=presets.TINY_SOURCE, metadata={"help": "source pipeline preset"})
    target: str = field(default=presets.TINY_TARGET, metadata={"help": "target pipeline preset"})
    scorer: str = field(default=presets.TINY_SCORER, metadata={"help": "scorer preset"})
    rewriter: str = field(default=presets.TINY_REWRITER, metadata={"help": "rewriter preset for the adapter"})
    train_steps: int = field(default=4, metadata={"help": "warm-start steps and GRPO steps of the demo adapter"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})

    def __post_init__(self):
        self.out = Path(self.out)
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        presets.pipeline(self.source), presets.pipeline(self.target), presets.scorer(self.scorer)
        presets.rewriter(self.rewriter)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    import datasets
    import torch

    from bridge.images import captioned_grid
    from bridge.render import Renderer
    from bridge.score import Scorer, cosine
    from bridge.tiny import default_prompts_dir
    from data.gather import GatherConfig, run_gather

    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    # 1. Gather: source renders + scorer embeddings of real prompts, as the pipeline's first stage does.
    gathered = cfg.out / "gather"
    run_gather(GatherConfig(prompts=str(cfg.prompts or default_prompts_dir() / "plain.jsonl"), out=gathered,
                            preset=cfg.source, scorer=cfg.scorer, seeds=cfg.seeds, seed=cfg.seed,
                            limit=cfg.num_prompts, device=cfg.device, progress=False), log=log)
    ds = datasets.load_from_disk(str(gathered))
    # 2. Train a tiny adapter on it (warm start + a few GRPO steps with the CLIP-agreement reward).
    from training.config import TrainConfig
    from training.trainer import run_train

    adapter = cfg.out / "adapter"
    run_train(TrainConfig(data=gathered, out=adapter, target=cfg.target, rewriter=cfg.rewriter, scorer=cfg.scorer,
                          steps=cfg.train_steps, warm_start_steps=cfg.train_steps, prompts_per_step=cfg.num_prompts,
                          k=2, max_new_tokens=16, lr=1e-3, checkpoint_every=max(1, 2 * cfg.train_steps),
                          device=cfg.device, seed=cfg.seed, progress=False), log=log)
    # 3. Render the same (prompt, seed) pairs with the target; source images are never rendered again.
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    tgt_images = Renderer(target, device=cfg.device)(ds["prompt"], ds["seed"], ds["negative_prompt"])
    # 4. Agreement in the scorer's CLIP space against the stored source embeddings, averaged over seeds.
    scorer = Scorer(presets.scorer(cfg.scorer), device=cfg.device)
    agree = cosine(torch.tensor(ds["embedding"]), scorer.embed_images(tgt_images))
    prompts = ds["prompt"][:: cfg.seeds]
    per_prompt = [sum(agree[i * cfg.seeds : (i + 1) * cfg.seeds]) / cfg.seeds for i in range(len(prompts))]
    # 5. Side-by-side sheet: per prompt, source | target for each seed.
    src_images = ds["image"]
    rows = [[img for k in range(cfg.seeds) for img in (src_images[i * cfg.seeds + k], tgt_images[i * cfg.seeds + k])]
            for i in range(len(prompts))]
    captions = [f"agreement {a:.3f} | {p}" for p, a in zip(prompts, per_prompt)]
    headers = [f"{name} s{k}" for k in range(cfg.seeds) for name in (cfg.source, cfg.target)]
    sheet_path = cfg.out / "side_by_side.png"
    captioned_grid(rows, captions, headers).save(sheet_path)
    summary = {
        "prompts": [{"prompt": p, "seeds": ds["seed"][i * cfg.seeds : (i + 1) * cfg.seeds], "agreement": a}
                    for i, (p, a) in enumerate(zip(prompts, per_prompt))],
        "mean_agreement": sum(per_prompt) / len(per_prompt),
        "renders": 2 * len(ds),
        "seconds": round(time.perf_counter() - started, 2),
        "gathered": str(gathered),
        "adapter": str(adapter),
        "side_by_side": str(sheet_path),
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    save_config(cfg, cfg.out, presets={"source": presets.describe(source), "target": presets.describe(target),
                                       "scorer": presets.describe(scorer.preset)})
    log(f"mean CLIP agreement {cfg.target} vs {cfg.source}: {summary['mean_agreement']:.3f} "
        f"over {len(prompts)} prompts x {cfg.seeds} seeds")
    log(f"side-by-side: {sheet_path}")
    return summary
