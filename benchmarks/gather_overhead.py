"""Gather throughput against a bare loop of diffusers pipeline calls, same prompts, batch size and run.

Target (issue): gather's renders/s at least 0.9x the bare loop's, i.e. cleaning, seeding, A1111
weighting, scorer embeddings, PNG encoding, shard writing and the final merge cost at most 10%.
Both sides load their models before the clock starts; the bare loop renders the same number of images
(prompts x seeds) with the same batch size and steps through `pipe(prompt=[...])`.

    uv run python -m benchmarks.gather_overhead [--prompts N] [--seeds K] [--batch-size B] [--preset tiny-sd15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.results import recorded
from bridge.models import presets
from bridge.models.loading import load_pipeline
from bridge.models.render import Renderer, RenderSettings
from bridge.models.score import Scorer
from bridge.models.tiny import default_prompts_dir


@recorded("gather_overhead")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--preset", default="tiny-sd15")
    ap.add_argument("--scorer", default="tiny-clip")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from data.gather import GatherConfig, run_gather

    source = presets.pipeline(args.preset)
    settings = RenderSettings.for_preset(source)
    with (default_prompts_dir() / "plain.jsonl").open(encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"].strip() for _, line in zip(range(args.prompts), fh)]
    n = len(prompts) * args.seeds

    # Bare loop: diffusers' own call, no weighting, no scoring, nothing written.
    pipe = load_pipeline(source, device=args.device)
    jobs = [(p, k) for p in prompts for k in range(args.seeds)]
    start = time.perf_counter()
    for i in range(0, n, args.batch_size):
        batch = jobs[i : i + args.batch_size]
        gens = [torch.Generator().manual_seed(k) for _, k in batch]
        pipe(prompt=[p for p, _ in batch], num_inference_steps=settings.steps, guidance_scale=settings.guidance,
             height=settings.height, width=settings.width, generator=gens, output_type="pil")
    bare = n / (time.perf_counter() - start)

    # Gather end to end, models warmed up by a one-prompt run first.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "p.txt"
        src.write_text("\n".join(prompts) + "\n", encoding="utf-8")
        renderer, scorer = Renderer(source, settings, device=args.device), Scorer(presets.scorer(args.scorer))
        renderer.pipe, scorer._load()  # noqa: B018 - models load before the clock starts, as for the bare loop
        import accelerate  # noqa: F401 - imports are one-off costs, paid before the clock as for the bare loop
        import datasets  # noqa: F401

        from bridge.syntax.tokens import clip_tokenizer

        clip_tokenizer()
        cfg = GatherConfig(prompts=str(src), out=Path(tmp) / "ds", preset=args.preset, scorer=args.scorer,
                           seeds=args.seeds, batch_size=args.batch_size, device=args.device, progress=False)
        start = time.perf_counter()
        run_gather(cfg, log=lambda *_: None, renderer=renderer, scorer=scorer)
        gather = n / (time.perf_counter() - start)
    ratio = gather / bare
    print(f"gather {gather:.2f} renders/s vs bare diffusers loop {bare:.2f} renders/s "
          f"({n} images, batch {args.batch_size}, {args.preset}): ratio {ratio:.3f} (target >= 0.9)")
    return {"gather_renders_per_s": gather, "bare_renders_per_s": bare, "ratio": ratio}


if __name__ == "__main__":
    main()
