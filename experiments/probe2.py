"""Scratch: renderers_listen + the duplicate check with toy-sd15/toy-sd2 taken from DIR. python probe2.py DIR"""
import dataclasses, sys, tempfile
from pathlib import Path
from bridge.models import presets
d = Path(sys.argv[1]).resolve()
orig = presets.pipeline
def pipeline(name, *a, **k):
    p = orig(name, *a, **k)
    return dataclasses.replace(p, local_path=str(d / name)) if name in ("toy-sd15", "toy-sd2") else p
presets.pipeline = pipeline
import benchmarks.toyworld_drift as td
import benchmarks.sweep_breadth as sb
for m, r in td.renderers_listen().items():
    print(m, {a: round(x, 3) for a, x in r.items()}, flush=True)
with tempfile.TemporaryDirectory() as t:
    dup = sb.duplicate_check(Path(t), 60)
sb._print_duplicates(dup)
