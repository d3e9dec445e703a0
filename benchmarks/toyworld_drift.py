"""The toy world's acceptance numbers (issue: toy world), measured in one run.

    uv run python -m benchmarks.toyworld_drift [--prompts 200] [--seeds 4] [--out DIR] [--weights DIR]

1. The drift is real: `sd-bridge eval --oracle` on held-out prompts x seeds, scored by toy-clip: oracle
   minus identity agreement (paired, 95% bootstrap interval), the oracle's win rate on drifted prompts,
   and the delta on prompts without drift (the same text, so it must tie).
2. The scorer sees meaning: agreement of the same prompt at another seed vs another prompt at the same seed.
3. The pictures are right: the colour and background read back from the pixels (toyworld.world.read_image)
   of toy-sd15 renders of source-dialect prompts and toy-sd2 renders of their target-dialect (oracle)
   translations, against what the prompt asks for; and the position and shape, against the same read back
   from the world's own drawings of those scenes (the reader is not perfect on striped and dotted shapes).
   Each model's own default background, where a prompt names none.
4. What the renderers read from a caption: per attribute, the UNet's denoising loss on the world's drawings
   with that attribute's words swapped, over the loss with the right words (1.0: the words are ignored).
Everything is rendered through the same Renderer/RenderCache as gather and eval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks.results import add_weights_flag, recorded, use_weights, weights_variant
from toyworld import world

HELDOUT = world.PROMPTS_DIR / "heldout.jsonl"


def drift_is_real(out: Path, n: int, seeds: int) -> dict:
    from eval.config import EvalConfig
    from eval.metrics import mean
    from eval.run import run_eval

    report = run_eval(EvalConfig(prompts=str(HELDOUT), out=out / "report", source="toy-sd15", target="toy-sd2",
                                 scorer="toy-clip", oracle=True, no_syntax=True, seeds=seeds, limit=n,
                                 device="cpu", render_batch=16), log=lambda *_: None)
    o = report["strategies"]["oracle"]
    rows = report["rows"]
    deltas = [r["strategies"]["oracle"]["agreement"] - r["strategies"]["identity"]["agreement"] for r in rows]
    drifted = [d for d, r in zip(deltas, rows) if r["drifts"]]
    clean = [d for d, r in zip(deltas, rows) if not r["drifts"]]
    tie = 0.005
    return {
        "prompts": len(rows), "seeds": seeds,
        "identity": report["strategies"]["identity"]["agreement_mean"], "oracle": o["agreement_mean"],
        "delta": o["vs_identity"]["delta_mean"], "delta_ci95": o["vs_identity"]["delta_ci95"],
        "drifted_prompts": len(drifted), "oracle_win_drifted": sum(d > tie for d in drifted) / max(1, len(drifted)),
        "no_drift_prompts": len(clean), "no_drift_delta": mean(clean) if clean else float("nan"),
        "by_drift": {k: {"prompts": v["prompts"], "delta": v["delta_mean"], "win": v["win"]}
                     for k, v in o["by_drift"].items()},
        "report": report,
    }


def scorer_sees_meaning(prompts: list[str], seeds: list[int], cache_dir: Path) -> dict:
    from bridge.models import presets
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache
    from bridge.models.score import Scorer, cosine

    cache = RenderCache(cache_dir, Renderer(presets.pipeline("toy-sd15")), Scorer(presets.scorer("toy-clip")), 16)
    a = cache.embeddings(prompts, [seeds[0]] * len(prompts))
    b = cache.embeddings(prompts, [seeds[1]] * len(prompts))
    same_prompt = sum(cosine(a, b)) / len(prompts)  # same prompt, another seed
    rolled = a.roll(1, dims=0)
    other_prompt = sum(cosine(a, rolled)) / len(prompts)  # another prompt, the same seed
    return {"same_prompt_other_seed": same_prompt, "other_prompt_same_seed": other_prompt}


def pictures_are_right(report: dict, cache_dir: Path) -> dict:
    from bridge.models import presets
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache
    from toyworld.world import (
        POSITIONS,
        SOURCE,
        TARGET,
        draw,
        read,
        read_image,
        realize,
    )

    out = {}
    for name, preset, dialect, text_of in (
            ("toy-sd15 (source prompts)", "toy-sd15", SOURCE, lambda r: (r["prompt"], r["negative_prompt"])),
            ("toy-sd2 (target-dialect prompts)", "toy-sd2", TARGET,
             lambda r: (r["strategies"]["oracle"]["text"], r["strategies"]["oracle"]["negative"]))):
        cache = RenderCache(cache_dir, Renderer(presets.pipeline(preset)), None, 16)
        flat = [(r, s) for r in report["rows"] for s in r["seeds"]]
        texts = [text_of(r) for r, _ in flat]
        images = cache.images([t for t, _ in texts], [s for _, s in flat], [n for _, n in texts])
        colour_ok = bg_ok = placed = drawn_placed = 0
        shapes = []  # (fill, the render reads right, the drawing reads right) for each prompt that names a shape
        for (_, seed), (text, _), image in zip(flat, texts, images):
            # What the prompt asks for, with the model's own default where it says nothing (white for toy-sd15).
            spec = read(text, dialect)
            want = realize(spec, dialect, random.Random(0))
            seen = read_image(image)
            colour_ok += seen["colour"] == want.colour
            bg_ok += seen["background"] == want.background
            placed += seen["position"] == want.position
            drawn = read_image(draw(want, seed))
            drawn_placed += drawn["position"] == want.position
            if spec.shape:  # where the prompt leaves the shape open, any is right
                shapes.append((want.fill, seen["shape"] == want.shape, drawn["shape"] == want.shape))
        named, shaped, drawn_shaped = len(shapes), sum(s[1] for s in shapes), sum(s[2] for s in shapes)
        # The reader misreads some of the world's own drawings (a dotted triangle of five dots): the share read
        # right where the same scene's drawing reads right separates the renderer's misses from the reader's.
        where_drawn = [ok for _, ok, drawn_ok in shapes if drawn_ok]
        by_fill = {fill: [(ok, drawn_ok) for f, ok, drawn_ok in shapes if f == fill]
                   for fill in sorted({f for f, _, _ in shapes})}
        out[name] = {"images": len(images), "colour": colour_ok / len(images), "background": bg_ok / len(images),
                     "position": placed / len(images), "position_of_drawings": drawn_placed / len(images),
                     "position_chance": 1 / len(POSITIONS), "shape_named": named, "shape": shaped / max(1, named),
                     "shape_of_drawings": drawn_shaped / max(1, named),
                     "shape_where_drawing_reads": sum(where_drawn) / max(1, len(where_drawn)),
                     "shape_by_fill": {fill: {"named": len(rows), "shape": sum(ok for ok, _ in rows) / len(rows),
                                              "shape_of_drawings": sum(d for _, d in rows) / len(rows)}
                                       for fill, rows in by_fill.items()}}
    return out


def default_background(report: dict, cache_dir: Path) -> dict:
    """Each model's own background where a prompt names none (white for toy-sd15, black for toy-sd2: the
    `default` drift): the source prompts as written, rendered by each. The oracle's translations always name a
    background, so `pictures_are_right` never asks toy-sd2 for its default; a renderer that draws it
    unreliably shrinks the drift the bridge must close. Read back from the pixels, over every seed."""
    from bridge.models import presets
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache
    from toyworld.world import SOURCE, TARGET, read, read_image

    specs = {r["index"]: read(r["prompt"], SOURCE) for r in report["rows"]}  # each prompt parsed once
    flat = [(r, s) for r in report["rows"] for s in r["seeds"] if specs[r["index"]].background is None]
    out = {}
    for preset, dialect in (("toy-sd15", SOURCE), ("toy-sd2", TARGET)):
        want = dialect.default("background", random.Random(0))
        # The eval's source and identity renders: the same texts, seeds and negatives, so the cache has them.
        cache = RenderCache(cache_dir, Renderer(presets.pipeline(preset)), None, 16)
        images = cache.images([r["prompt"] for r, _ in flat], [s for _, s in flat],
                              [r["strategies"]["identity"]["negative"] for r, _ in flat])
        seen = [read_image(image)["background"] for image in images]
        prompts = {r["index"]: True for r, _ in flat}
        for (r, _), bg in zip(flat, seen):
            prompts[r["index"]] &= bg == want
        # An artist's name is a word toy-sd2 never learned (the `artist` drift): apart, it shows whether words
        # a model does not know pull it off its default.
        artist = [bg == want for (r, _), bg in zip(flat, seen) if specs[r["index"]].artist]
        plain = [bg == want for (r, _), bg in zip(flat, seen) if not specs[r["index"]].artist]
        out[preset] = {"default": want, "images": len(seen), "share": sum(b == want for b in seen) / max(1, len(seen)),
                       "prompts": len(prompts), "every_seed": sum(prompts.values()) / max(1, len(prompts)),
                       "with_artist": {"images": len(artist), "share": sum(artist) / max(1, len(artist))},
                       "without_artist": {"images": len(plain), "share": sum(plain) / max(1, len(plain))}}
    return out


def renderers_listen(n: int = 96, timesteps: tuple[int, ...] = (300, 500, 700, 900)) -> dict:
    """What each toy UNet reads from its caption: the denoising loss on the world's drawings with one attribute's
    words swapped for another value, over the loss with the right words, averaged over `timesteps` (where the
    layout is decided). 1.0 means the model ignores that attribute's words; the same noise is used for both."""
    import numpy as np
    import torch

    from bridge.models import presets
    from bridge.models.loading import load_pipeline
    from toyworld.build import token_ids

    out = {}
    for preset, dialect in (("toy-sd15", world.SOURCE), ("toy-sd2", world.TARGET)):
        pipe = load_pipeline(presets.pipeline(preset), device="cpu", dtype="float32")
        said = {"shape": world.SHAPES, "colour": world.NAMED_COLOURS, "size": ("small", "large"),
                "position": world.POSITIONS[1:], "fill": tuple(sorted(dialect.fills)),
                "background": tuple(world.BACKGROUNDS)}  # values the dialect writes out (no defaults)
        rng = random.Random(f"listen-{preset}")
        specs = [world.Spec(**{a: rng.choice(v) for a, v in said.items()}) for _ in range(n)]
        pixels = np.stack([np.asarray(world.draw(world.realize(sp, dialect, rng), i), np.float32)
                           for i, sp in enumerate(specs)]).transpose(0, 3, 1, 2) / 127.5 - 1
        sched = pipe.scheduler
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            x0 = pipe.vae.encode(torch.from_numpy(pixels)).latent_dist.mean * pipe.vae.config.scaling_factor
            noise = [torch.randn(x0.shape, generator=gen) for _ in timesteps]

            def loss(captions: list[str]) -> float:
                h = pipe.text_encoder(token_ids(pipe.tokenizer, captions))[0]
                total = 0.0
                for t, eps in zip(timesteps, noise):
                    tt = torch.full((n,), t)
                    target = sched.get_velocity(x0, eps, tt) if sched.config.prediction_type == "v_prediction" else eps
                    total += torch.nn.functional.mse_loss(pipe.unet(sched.add_noise(x0, eps, tt), tt, h).sample,
                                                          target).item()
                return total

            right = loss([world.write(sp, dialect) for sp in specs])
            out[preset] = {}
            for attr, values in said.items():  # every caption's value moved to the next one the dialect writes
                wrong = [world.write(dataclasses.replace(sp, **{attr: values[(values.index(getattr(sp, attr)) + 1)
                                                                                % len(values)]}), dialect)
                         for sp in specs]
                out[preset][attr] = loss(wrong) / right
    return out


@recorded("toyworld_drift", weights_variant)
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="keep the report and renders here")
    add_weights_flag(ap)
    args = ap.parse_args(argv)
    use_weights(args.weights)
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    started = time.perf_counter()
    drift = drift_is_real(out, args.prompts, args.seeds)
    report = drift.pop("report")
    prompts = [r["prompt"] for r in report["rows"]][:100]
    meaning = scorer_sees_meaning(prompts, [11, 22], out / "report" / "render-cache")
    pictures = pictures_are_right(report, out / "report" / "render-cache")
    defaults = default_background(report, out / "report" / "render-cache")
    listen = renderers_listen()
    lo, hi = drift["delta_ci95"]
    print(f"toy world on {drift['prompts']} held-out prompts x {drift['seeds']} seeds (toy-sd15 -> toy-sd2, toy-clip):")
    print(f"  drift is real: oracle - identity = {drift['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}] "
          f"(identity {drift['identity']:.4f}, oracle {drift['oracle']:.4f}; target >= +0.10, interval above 0)")
    print(f"  oracle wins on {drift['oracle_win_drifted']:.0%} of {drift['drifted_prompts']} drifted prompts "
          f"(target >= 80%); no-drift prompts ({drift['no_drift_prompts']}): delta {drift['no_drift_delta']:+.4f} "
          f"(target within 0.005)")
    for name, d in drift["by_drift"].items():
        print(f"    {name:10s} {d['prompts']:4d} prompts: oracle - identity {d['delta']:+.4f}, oracle wins {d['win']:.0%}")
    print(f"  scorer sees meaning: same prompt, other seed {meaning['same_prompt_other_seed']:.4f} vs other prompt, "
          f"same seed {meaning['other_prompt_same_seed']:.4f} (ratio of distances "
          f"{(1 - meaning['other_prompt_same_seed']) / max(1e-9, 1 - meaning['same_prompt_other_seed']):.1f}x)")
    for name, p in pictures.items():
        print(f"  pictures are right, {name}: colour {p['colour']:.1%}, background {p['background']:.1%} "
              f"of {p['images']} images (target >= 90%); position {p['position']:.1%} (the world's own drawings "
              f"{p['position_of_drawings']:.1%}, chance {p['position_chance']:.0%}); shape {p['shape']:.1%} of the "
              f"{p['shape_named']} whose prompt names one (the world's own drawings {p['shape_of_drawings']:.1%}, "
              f"chance 33%); {p['shape_where_drawing_reads']:.1%} where the same scene's drawing reads right; by "
              "fill (renders / drawings): " + ", ".join(f"{fill} {f['shape']:.0%} / {f['shape_of_drawings']:.0%}"
                                                         for fill, f in p["shape_by_fill"].items()))
    print("  default background where a prompt names none (source prompts as written): " + "; ".join(
        f"{name} {d['default']} on {d['share']:.1%} of {d['images']} images (naming an artist "
        f"{d['with_artist']['share']:.0%} of {d['with_artist']['images']}, not {d['without_artist']['share']:.0%}), "
        f"at every seed on {d['every_seed']:.0%} of {d['prompts']} prompts" for name, d in defaults.items())
        + " (target >= 95%)")
    for name, ratios in listen.items():
        print(f"  what {name} reads from its caption (denoising loss with the attribute's words swapped / with the "
              "right words; 1.00 = ignored): " + ", ".join(f"{a} {r:.2f}" for a, r in ratios.items()))
    seconds = time.perf_counter() - started
    print(f"  took {seconds:.0f}s on this machine")
    result = {"drift": drift, "meaning": meaning, "pictures": pictures, "default_background": defaults,
              "listen": listen, "seconds": seconds}
    if args.out:
        (out / "toyworld_drift.json").write_text(json.dumps(result, indent=2) + "\n")
    if tmp:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
