"""The toy pipelines' guidance: what each guidance scale draws, read back from the pixels, so the presets' value
(toyworld/presets.py) is a measured choice.

    uv run python -m benchmarks.toyworld_guidance [--prompts 40] [--seeds 2] [--guidance 1 1.5 2 3 5]

Each model renders held-out prompts in its own dialect (toy-sd15 the prompt as written, toy-sd2 the oracle's
translation), so a wrong picture is the renderer's fault, not the dialect's. Per guidance: colour and background
read back together (world.read_image), and position and shape where the prompt names one (shape on solid fills
only: the reader misses some striped and dotted drawings). The preset's own guidance is the baseline row.
"""

from __future__ import annotations

import argparse
import json
import random

from benchmarks.results import recorded


def read_back(name: str, key: str, dialect, rows: list[dict], seeds: int, guidance: float) -> dict:
    from bridge.models import presets
    from bridge.models.render import Renderer, RenderSettings
    from toyworld import world

    preset = presets.pipeline(name)
    prompts = [r[key] for r in rows for _ in range(seeds)]
    specs = [world.read(p, dialect) for p in prompts]
    scenes = [world.realize(s, dialect, random.Random(0)) for s in specs]  # the world's defaults filled in
    images = Renderer(preset, RenderSettings.for_preset(preset, guidance=guidance))(
        prompts, [s for _ in rows for s in range(seeds)], batch_size=40)
    seen = [world.read_image(im) for im in images]
    position = [s["position"] == (sp.position or "center") for s, sp in zip(seen, specs) if sp.position]
    shape = [s["shape"] == sp.shape for s, sp, sc in zip(seen, specs, scenes) if sp.shape and sc.fill == "solid"]
    return {"images": len(seen),
            "colour_and_background": sum(s["colour"] == sc.colour and s["background"] == sc.background
                                         for s, sc in zip(seen, scenes)) / len(seen),
            "position": sum(position) / max(1, len(position)), "position_named": len(position),
            "shape_solid": sum(shape) / max(1, len(shape)), "shape_named_solid": len(shape)}


@recorded("toyworld_guidance")
def main(argv: list[str] | None = None) -> dict:
    from bridge.models import presets
    from toyworld import world

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 5.0])
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in (world.PROMPTS_DIR / "heldout.jsonl").read_text("utf-8").splitlines()]
    rows = rows[: args.prompts]
    out = {}
    for name, key, dialect in (("toy-sd15", "prompt", world.SOURCE), ("toy-sd2", "oracle", world.TARGET)):
        shipped = presets.pipeline(name).guidance
        out[name] = {"shipped_guidance": shipped, "by_guidance": {}}
        for g in args.guidance:
            r = read_back(name, key, dialect, rows, args.seeds, g)
            out[name]["by_guidance"][str(g)] = r
            print(f"{name} guidance {g:g}{' (shipped)' if g == shipped else ''}: colour+background "
                  f"{r['colour_and_background']:.1%} of {r['images']}, position {r['position']:.1%} of "
                  f"{r['position_named']}, shape {r['shape_solid']:.1%} of {r['shape_named_solid']} solid", flush=True)
        best = max(out[name]["by_guidance"], key=lambda g: out[name]["by_guidance"][g]["colour_and_background"])
        out[name]["best_guidance"] = float(best)
        print(f"{name}: best colour+background at guidance {float(best):g}, shipped {shipped:g}")
    return out


if __name__ == "__main__":
    main()
