"""Scratch: guidance calibration of the toy pipelines in DIR (as the preset comment describes): 40 held-out prompts
x 2 seeds, each model in its own dialect (toy-sd15 the prompt, toy-sd2 the oracle), colour + background read back,
and position and shape where the prompt names one (the shape against the reader on solid fills only: it misses
some striped and dotted drawings). python guidance.py DIR G1,G2,..."""
import dataclasses, json, sys
from pathlib import Path
from bridge.models import presets
from bridge.models.render import Renderer, RenderSettings
from toyworld import world
d = Path(sys.argv[1]).resolve()
rows = [json.loads(l) for l in open("toyworld/prompts/heldout.jsonl")][:40]
for name, key, dialect in (("toy-sd15", "prompt", world.SOURCE), ("toy-sd2", "oracle", world.TARGET)):
    p = dataclasses.replace(presets.pipeline(name), local_path=str(d / name))
    prompts = [r[key] for r in rows for _ in range(2)]; seeds = [s for _ in rows for s in range(2)]
    scenes = [world.realize(world.read(r[key], dialect), dialect, __import__("random").Random(0)) for r in rows for _ in range(2)]
    specs = [world.read(r[key], dialect) for r in rows for _ in range(2)]
    for g in [float(x) for x in sys.argv[2].split(',')]:
        ims = Renderer(p, RenderSettings.for_preset(p, guidance=g))(prompts, seeds, batch_size=40)
        seen = [world.read_image(im) for im in ims]
        cb = sum(s["colour"] == sc.colour and s["background"] == sc.background for s, sc in zip(seen, scenes)) / len(seen)
        pos = [(s["position"] == (sp.position or "center")) for s, sp in zip(seen, specs) if sp.position]
        shp = [s["shape"] == sp.shape for s, sp, sc in zip(seen, specs, scenes) if sp.shape and sc.fill == "solid"]
        c = sum(s["colour"] == sc.colour for s, sc in zip(seen, scenes)) / len(seen); b = sum(s["background"] == sc.background for s, sc in zip(seen, scenes)) / len(seen)
        print(f"{name} guidance {g}: colour+background {cb:.1%} (colour {c:.1%}, background {b:.1%}), position {sum(pos)}/{len(pos)}, "
              f"shape (solid) {sum(shp)}/{len(shp)}", flush=True)
