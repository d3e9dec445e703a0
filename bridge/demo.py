"""`sd-bridge demo`: the main job end to end on the embedded tiny presets, offline, in well under two minutes.

gather (source renders of real prompts from ../shared/prompts) -> train (a tiny LoRA adapter) -> eval
(identity vs syntax vs adapter report with image grids) -> translate (a prompt with the adapter). Tiny
models draw noise: the demo shows every stage working, not translation quality.
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
    """Run gather -> train -> eval -> translate end to end on tiny offline models."""

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
    from bridge.tiny import default_prompts_dir
    from bridge.translator import Translator
    from data.gather import GatherConfig, run_gather
    from eval.config import EvalConfig
    from eval.run import run_eval
    from training.config import TrainConfig
    from training.trainer import run_train

    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    # 1. Gather: source renders + scorer embeddings of real prompts.
    gathered = cfg.out / "gather"
    run_gather(GatherConfig(prompts=str(cfg.prompts or default_prompts_dir() / "plain.jsonl"), out=gathered,
                            preset=cfg.source, scorer=cfg.scorer, seeds=cfg.seeds, seed=cfg.seed,
                            limit=cfg.num_prompts, device=cfg.device, progress=False), log=log)
    # 2. Train a tiny adapter on it (warm start + a few GRPO steps with the CLIP-agreement reward).
    adapter = cfg.out / "adapter"
    run_train(TrainConfig(data=gathered, out=adapter, target=cfg.target, rewriter=cfg.rewriter, scorer=cfg.scorer,
                          steps=cfg.train_steps, warm_start_steps=cfg.train_steps, prompts_per_step=cfg.num_prompts,
                          k=2, max_new_tokens=16, lr=1e-3, checkpoint_every=max(1, 2 * cfg.train_steps),
                          device=cfg.device, seed=cfg.seed, progress=False), log=log)
    # 3. Eval: identity vs syntax vs the adapter, reusing the gathered source renders (train = eval prompts
    #    here: the demo shows the mechanics; a real evaluation uses held-out prompts).
    report_dir = cfg.out / "report"
    report = run_eval(EvalConfig(prompts=str(gathered), out=report_dir, source=cfg.source, target=cfg.target,
                                 scorer=cfg.scorer, adapter=[adapter], seeds=cfg.seeds, seed=cfg.seed,
                                 device=cfg.device, cache_dir=adapter / "render-cache"), log=log)
    # 4. Translate with the adapter, as `sd-bridge translate --adapter` would.
    example = "(masterpiece:1.2), a lighthouse at dusk, <lora:add_detail:0.7>, by greg rutkowski"
    translated = Translator.from_pretrained(adapter, device=cfg.device).translate([example])[0]
    summary = {
        "gathered": str(gathered), "adapter": str(adapter), "report": str(report_dir / "report.html"),
        "strategies": {k: v["agreement_mean"] for k, v in report["strategies"].items()},
        "example": {"prompt": example, "translated": translated.translated_prompt},
        "seconds": round(time.perf_counter() - started, 2),
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    save_config(cfg, cfg.out, presets={"source": presets.describe(source), "target": presets.describe(target),
                                       "scorer": presets.describe(presets.scorer(cfg.scorer))})
    log(f"translate --adapter: {example!r}\n                   -> {translated.translated_prompt!r}")
    log(f"demo finished in {summary['seconds']:.0f}s; report: {summary['report']}")
    return summary
