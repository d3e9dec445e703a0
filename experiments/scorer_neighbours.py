"""toy-clip cosine between drawings of one scene at two seeds, and between scenes that differ in one attribute
(200 scenes of the duplicate check). python experiments/scorer_neighbours.py [TOY_CLIP_DIR] [THRESHOLD]"""
import dataclasses, random, sys, torch
torch.set_num_threads(1)
from bridge.models import presets
from bridge.models.score import Scorer
from toyworld import world as w
import benchmarks.sweep_breadth as sb
path = sys.argv[1] if len(sys.argv) > 1 else None
p = presets.scorer("toy-clip")
if path: p = dataclasses.replace(p, local_path=path, revision="scratch-" + path)
sc = Scorer(p, batch_size=256)
scenes = sb._scenes(200, 1)
rng = random.Random(0)
values = {"colour": w.NAMED_COLOURS, "shape": w.SHAPES, "size": w.SIZES, "position": w.POSITIONS, "fill": w.FILLS, "background": w.BACKGROUNDS}
rows = {"same": []}
for s in scenes:
    a = sc.embed_images([w.draw(s, 1)]); b = sc.embed_images([w.draw(s, 2)])
    rows["same"].append(float((a * b).sum()))
    for attr, vals in values.items():
        other = dataclasses.replace(s, **{attr: rng.choice([v for v in vals if v != getattr(s, attr)])})
        c = sc.embed_images([w.draw(other, 2)])
        rows.setdefault(attr, []).append(float((a * c).sum()))
import statistics as st
thr = float(sys.argv[2]) if len(sys.argv) > 2 else 0.919
for k, v in rows.items():
    v = sorted(v)
    print(f"{k:10s} mean {st.mean(v):.3f}  p5 {v[len(v)//20]:.3f} p50 {v[len(v)//2]:.3f} p95 {v[-len(v)//20]:.3f}  >= {thr}: {sum(x >= thr for x in v)/len(v):.0%}")
