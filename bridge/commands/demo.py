"""`sd-bridge demo`: the main job end to end on the toy world, offline, in under three minutes.

gather (toy-sd15 renders of train-split toy prompts) -> train (a LoRA on toy-t5 against toy-sd2) -> eval
(identity, syntax, the adapter and the oracle on held-out prompts, with image grids) -> translate. The
toy world's models are small but *trained* (toyworld), so the report and the closing story show what
the tool is for: toy-sd2 draws something else for a toy-sd15 prompt, and the right translation draws
what toy-sd15 drew. The pictures are described in words read back from their pixels.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.config import save_config
from bridge.models import presets
from toyworld import world

TOY_PROMPTS = world.PROMPTS_DIR
EXAMPLE = "a crimson circle"


@dataclass
class DemoConfig:
    """Run gather -> train -> eval -> translate end to end on the toy world, offline."""

    out: Path = field(default=Path("demo-out"), metadata={"help": "output directory"})
    prompts: Path | None = field(default=None, metadata={"help": "training prompts (any format gather reads; "
                                                                  "default: the toy world's train split)"})
    eval_prompts: Path | None = field(default=None, metadata={"help": "held-out prompts for the report (default: "
                                                                       "the toy world's held-out split)"})
    num_prompts: int = field(default=120, metadata={"help": "training prompts to gather"})
    num_eval_prompts: int = field(default=16, metadata={"help": "held-out prompts in the report"})
    seeds: int = field(default=2, metadata={"help": "seeds per prompt (the same seeds for source and target)"})
    seed: int = field(default=0, metadata={"help": "base seed from which per-prompt seeds derive"})
    source: str = field(default=presets.TOY_SOURCE, metadata={"help": "source pipeline preset"})
    target: str = field(default=presets.TOY_TARGET, metadata={"help": "target pipeline preset"})
    scorer: str = field(default=presets.TOY_SCORER, metadata={"help": "scorer preset"})
    rewriter: str = field(default=presets.TOY_REWRITER, metadata={"help": "rewriter preset for the adapter"})
    train_steps: int = field(default=40, metadata={"help": "GRPO steps of the demo adapter (the toy-world recipe "
                                                                "of benchmarks/toyworld_learning.py, reduced)"})
    example: str = field(default=EXAMPLE, metadata={"help": "the prompt whose story the demo tells at the end"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})

    def __post_init__(self):
        self.out = Path(self.out)
        for name in ("num_prompts", "num_eval_prompts", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        presets.pipeline(self.source), presets.pipeline(self.target), presets.scorer(self.scorer)
        presets.rewriter(self.rewriter)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    from bridge.translator import Translator
    from data.gather import GatherConfig, run_gather
    from eval.config import EvalConfig
    from eval.run import run_eval
    from training.config import TrainConfig
    from training.trainer import run_train

    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    toy = source.toy and target.toy
    # 1. Gather: source renders + scorer embeddings of the training prompts.
    gathered = cfg.out / "gather"
    run_gather(GatherConfig(prompts=str(cfg.prompts or TOY_PROMPTS / "train.jsonl"), out=gathered,
                            preset=cfg.source, scorer=cfg.scorer, seeds=cfg.seeds, seed=cfg.seed,
                            limit=cfg.num_prompts, device=cfg.device, progress=False), log=log)
    # 2. Train an adapter on it: the toy-world GRPO recipe (benchmarks/toyworld_learning.py) at a reduced size,
    #    enough to learn "crimson" (training took 62 s on 2 CPU cores) (no warm start: toy-t5 already copies its input).
    adapter = cfg.out / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)  # the demo's own adapter, remade on every run
    run_train(TrainConfig(data=gathered, out=adapter, target=cfg.target, rewriter=cfg.rewriter, scorer=cfg.scorer,
                          steps=cfg.train_steps, warm_start_steps=0, reward_seeds=1,
                          prompts_per_step=min(8, cfg.num_prompts), k=4, lr=1e-3,
                          checkpoint_every=max(1, cfg.train_steps), device=cfg.device, seed=cfg.seed,
                          progress=False), log=log)
    # 3. Eval on held-out prompts the adapter never saw: identity, syntax, the adapter and (toy) the oracle.
    report_dir = cfg.out / "report"
    cache = cfg.out / "render-cache"
    report = run_eval(EvalConfig(prompts=str(cfg.eval_prompts or TOY_PROMPTS / "heldout.jsonl"), out=report_dir,
                                 source=cfg.source, target=cfg.target, scorer=cfg.scorer, adapter=[adapter],
                                 oracle=toy, seeds=cfg.seeds, seed=cfg.seed, limit=cfg.num_eval_prompts,
                                 device=cfg.device, cache_dir=cache, progress=False), log=log)
    # 4. Translate one prompt with the adapter, as `sd-bridge translate --adapter` would, and tell its story.
    translated = Translator.from_pretrained(adapter, device=cfg.device).translate([cfg.example])[0]
    story = tell_story(cfg, translated.translated_prompt, cache, log) if toy else []
    summary = {
        "gathered": str(gathered), "adapter": str(adapter), "report": str(report_dir / "report.html"),
        "strategies": {k: v["agreement_mean"] for k, v in report["strategies"].items()},
        "example": {"prompt": cfg.example, "translated": translated.translated_prompt}, "story": story,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    save_config(cfg, cfg.out, presets={"source": presets.describe(source), "target": presets.describe(target),
                                       "scorer": presets.describe(presets.scorer(cfg.scorer))})
    log(f"demo finished in {summary['seconds']:.0f}s; report: {summary['report']}")
    return summary


def tell_story(cfg: DemoConfig, adapter_prompt: str, cache: Path, log=print) -> list[dict]:
    """Render the example with each model and each translation, and say what every picture shows."""
    from bridge.models.render import Renderer, derive_seed
    from toyworld.world import describe, oracle

    right = oracle(cfg.example)
    seed = derive_seed(cfg.seed, cfg.example, 0)
    lines = [("toy-sd15", cfg.source, cfg.example, ""), ("toy-sd2, same prompt", cfg.target, cfg.example, ""),
             ("toy-sd2, adapter", cfg.target, adapter_prompt, ""),
             ("toy-sd2, oracle", cfg.target, right.prompt, right.negative_prompt)]
    renderers: dict[str, Renderer] = {}
    story = []
    log(f"what the models draw for {cfg.example!r} (seed {seed}), read back from the pixels:")
    for label, preset, prompt, negative in lines:
        renderer = renderers.setdefault(preset, Renderer(presets.pipeline(preset), device=cfg.device))
        image = renderer([prompt], [seed], [negative])[0]
        image.resize((128, 128)).save(cache.parent / f"story-{len(story)}.png")
        neg = f" (negative {negative!r})" if negative else ""
        log(f"  {label:22s} {prompt!r}{neg}: {describe(image)}")
        story.append({"label": label, "preset": preset, "prompt": prompt, "negative_prompt": negative,
                      "sees": describe(image)})
    log(f"  the drifts in {cfg.example!r}: {', '.join(right.drifts) or 'none'}")
    return story
