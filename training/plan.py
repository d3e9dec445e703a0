"""A run's plan before it starts (`sd-bridge train --dry-run`): what it will generate and render, and how long
that takes on this device, measured with one generation and one render."""

from __future__ import annotations

import time

from bridge.models import presets
from training.config import TrainConfig


def plan_run(cfg: TrainConfig, groups: list) -> dict:
    """What a run of `cfg` on `groups` will do (--dry-run prints it, with time estimates)."""
    rollouts = cfg.steps * min(cfg.prompts_per_step, len(groups)) * cfg.k
    return {"prompts": len(groups), "warm_start_steps": cfg.warm_start_steps, "steps": cfg.steps,
            "generations": rollouts, "renders_at_most": rollouts * max(len(g.seeds) for g in groups)}


def estimate(cfg: TrainConfig, model, tokenizer, inputs, plan) -> dict:
    """Seconds for one generation and one target render on this device, and the run extrapolated."""
    from bridge.models.render import Renderer
    from bridge.models.rewriter import generate

    t = time.perf_counter()
    generate(model, tokenizer, inputs[:1], num_candidates=cfg.k, sample=True, max_new_tokens=cfg.max_new_tokens
             or presets.rewriter(cfg.rewriter).max_new_tokens)
    gen_s = (time.perf_counter() - t) / cfg.k
    renderer = Renderer(presets.pipeline(cfg.target), device="auto" if cfg.device == "auto" else cfg.device)
    renderer([inputs[0]], [0])  # load + warm up
    t = time.perf_counter()
    renderer([inputs[0]], [1])
    render_s = time.perf_counter() - t
    est = plan["generations"] * gen_s + plan["renders_at_most"] * render_s
    return {"seconds_per_generation": round(gen_s, 4), "seconds_per_render": round(render_s, 4),
            "estimated_seconds_at_most": round(est, 1), "estimated_hours_at_most": round(est / 3600, 2)}
