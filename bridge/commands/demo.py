"""`sd-bridge demo`: the main job end to end on the toy world, offline, in under three minutes.

`sd-bridge learn` on the toy world's library (prepare, gather with toy-sd15, train a LoRA on toy-t5 against
toy-sd2, eval identity, syntax, the adapter and the oracle on held-out prompts, export), then a translation with
the export and with the shipped toy adapter (`--adapter toy`: the same recipe at full size). The toy world's
models are small but *trained* (toyworld), so the report and the closing story show what the tool is for:
toy-sd2 draws something else for a toy-sd15 prompt, and the right translation draws what toy-sd15 drew. The
pictures are described in words read back from their pixels.
"""

from __future__ import annotations

import json
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
    """Run `sd-bridge learn` on the toy world and translate with what it learned, offline."""

    out: Path = field(default=Path("demo-out"), metadata={"help": "output directory"})
    library: Path | None = field(default=None, metadata={"help": "the prompt library to learn from (default: the "
                                                                  "toy world's train split)"})
    budget: str = field(default="small", metadata={"help": "learn's budget: small, medium, large or N target "
                                                           "renders"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    source: str = field(default=presets.TOY_SOURCE, metadata={"help": "source pipeline preset"})
    target: str = field(default=presets.TOY_TARGET, metadata={"help": "target pipeline preset"})
    scorer: str = field(default=presets.TOY_SCORER, metadata={"help": "scorer preset"})
    rewriter: str = field(default=presets.TOY_REWRITER, metadata={"help": "rewriter preset for the adapter"})
    example: str = field(default=EXAMPLE, metadata={"help": "the prompt whose story the demo tells at the end"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})

    def __post_init__(self):
        self.out = Path(self.out)
        presets.pipeline(self.source), presets.pipeline(self.target), presets.scorer(self.scorer)
        presets.rewriter(self.rewriter)
        self.learn_config()  # a bad budget or library is a usage error now, not after the models load

    def learn_config(self):
        from bridge.commands.learn import LearnConfig

        return LearnConfig(library=self.library or TOY_PROMPTS / "train.jsonl", source=self.source,
                           target=self.target, scorer=self.scorer, rewriter=self.rewriter, budget=self.budget,
                           seed=self.seed, out=self.out, device=self.device, progress=False)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    from bridge.commands.learn import run_learn
    from bridge.translator import Translator

    started = time.perf_counter()
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    # 1. Learn a bridge on the library: plan, prepare, gather, train, eval, export (resumable; a rerun of the
    #    same demo skips what is done).
    learned = run_learn(cfg.learn_config(), log=log)
    # 2. Translate one prompt with the export, as `sd-bridge translate --adapter` would, and, on the toy world,
    #    with the shipped toy adapter (the recipe at full size, `--adapter toy`), and tell their story.
    translated = Translator.from_pretrained(cfg.out / "export", device=cfg.device).translate([cfg.example])[0]
    toy = source.toy and target.toy
    shipped = presets.default_adapter(target.name) if toy else None
    ready = Translator.from_pretrained(shipped, device=cfg.device).translate([cfg.example])[0] if shipped else None
    story = tell_story(cfg, translated, ready, cfg.out / "render-cache", log) if toy else []
    summary = {**learned, "strategies": learned["agreement"],
               "example": {"prompt": cfg.example, "translated": translated.translated_prompt,
                           "shipped_adapter": ready and ready.translated_prompt}, "story": story,
               "seconds": round(time.perf_counter() - started, 2)}
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    save_config(cfg, cfg.out, presets={"source": presets.describe(source), "target": presets.describe(target),
                                       "scorer": presets.describe(presets.scorer(cfg.scorer))})
    log(f"demo finished in {summary['seconds']:.0f}s; report: {summary['report']}")
    return summary


def tell_story(cfg: DemoConfig, learned, shipped, cache: Path, log=print) -> list[dict]:
    """Render the example with each model and each translation (`learned`: the adapter this demo trained;
    `shipped`: the toy adapter's, or None), and say what every picture shows."""
    from bridge.models.render import Renderer, derive_seed
    from toyworld.world import describe, oracle

    right = oracle(cfg.example)
    seed = derive_seed(cfg.seed, cfg.example, 0)
    said = lambda t: (t.translated_prompt, t.translated_negative_prompt or "")  # noqa: E731
    lines = [("toy-sd15", cfg.source, cfg.example, ""), ("toy-sd2, same prompt", cfg.target, cfg.example, ""),
             ("toy-sd2, adapter", cfg.target, *said(learned))]
    if shipped is not None:
        lines.append(("toy-sd2, toy adapter", cfg.target, *said(shipped)))
    lines.append(("toy-sd2, oracle", cfg.target, right.prompt, right.negative_prompt))
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
