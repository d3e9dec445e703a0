"""Training step time split on tiny presets: generate / render / score / update, and the render-cache hit rate.

Target (issue): everything except rendering and scoring is at most 25% of step time: the rewriter and the
optimiser must not be the bottleneck, renders are. Gathers a small tiny dataset, trains a few GRPO steps
with the real CLIP-agreement reward, and sums the per-step log.

    uv run python -m benchmarks.train_step_split [--steps 8] [--prompts 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.results import recorded
from bridge.models.tiny import default_prompts_dir


@recorded("train_step_split")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    from data.gather import GatherConfig, run_gather
    from training.config import TrainConfig
    from training.trainer import run_train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ds"
        run_gather(GatherConfig(prompts=str(default_prompts_dir() / "plain.jsonl"), out=data, preset="tiny-sd15",
                                scorer="tiny-clip", seeds=2, limit=args.prompts * 2, device="cpu", progress=False),
                   log=lambda *_: None)
        cfg = TrainConfig(data=data, out=Path(tmp) / "adapter", target="tiny-sd2", rewriter="tiny-t5",
                          scorer="tiny-clip", steps=args.steps, warm_start_steps=0, prompts_per_step=args.prompts,
                          k=args.k, device="cpu", progress=False)
        history = run_train(cfg, log=lambda *_: None)["history"]
    rl = [h for h in history if h.get("reward_mean") is not None][1:]  # step 1 pays one-off model loads
    tot = {k: sum(h[k] for h in rl) for k in ("time_step", "time_generate", "time_render", "time_score", "time_update",
                                              "renders", "cache_hits")}
    other = tot["time_step"] - tot["time_render"] - tot["time_score"]
    share = other / tot["time_step"]
    hit_rate = tot["cache_hits"] / max(1, tot["renders"] + tot["cache_hits"])
    print(f"train step split over {len(rl)} GRPO steps (tiny presets, K={args.k}, {args.prompts} prompts/step): "
          f"render {tot['time_render'] / tot['time_step']:.0%}, score {tot['time_score'] / tot['time_step']:.0%}, "
          f"generate {tot['time_generate'] / tot['time_step']:.0%}, update {tot['time_update'] / tot['time_step']:.0%}; "
          f"everything but render+score {share:.1%} (target <= 25%); cache hit rate {hit_rate:.0%}")
    return {**tot, "other_share": share, "hit_rate": hit_rate, "steps": json.dumps(len(rl))}


if __name__ == "__main__":
    main()
