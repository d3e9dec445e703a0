"""Reference index build and search (issue #14), each against a naive baseline in the same run.

    uv run python -m benchmarks.reference_index [--images 4096] [--scale 4] [--queries 256] [--dim 1024]

1. Build: `sd-bridge index` (streaming, shard by shard) on a folder of `--images` PNGs (toy-world drawings at
   128 px) and on one `--scale` times larger, each in a fresh process: images/s and peak memory above the
   process's memory before the build. Baseline: load every image, then embed them all (what a script does).
   Memory is flat when the streaming build's peak does not grow with the collection; the default sizes are
   one full shard (4,096 rows) and four.
2. Search: queries/s for exact top-10 search at 10k and 100k references of dimension `--dim` (1024 is the
   ViT-H-14 scorer's), by bridge.reference.search (chunked matrix product + running top-k) and by the
   baseline: one full similarity matrix and a full sort per query (numpy argsort).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path

def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0

import torch
from bridge import presets
from bridge.score import Scorer
mode, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
scorer = Scorer(presets.scorer('toy-clip'), device='cpu', batch_size=64)
scorer._load()
from PIL import Image
Image.open(next(folder.glob('*.png'))).convert('RGB')  # warm the decoders
before = rss('VmRSS:')
t = time.perf_counter()
if mode == 'stream':
    from bridge.reference import build_index, list_source
    meta = build_index(list_source(str(folder), 'toy-clip'), out, scorer, 64)
    n = meta['rows']
else:
    images = []
    for p in sorted(folder.glob('*.png')):
        with Image.open(p) as im:
            images.append(im.convert('RGB'))
    emb = scorer.embed_images(images)
    n = len(emb)
seconds = time.perf_counter() - t
print(json.dumps({'images': n, 'seconds': seconds, 'peak_above_start': rss('VmHWM:') - before}))
"""


def make_images(folder: Path, n: int, side: int = 128) -> None:
    import random

    from bridge.toy import world as w

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        w.draw(w.random_scene(rng), i).resize((side, side)).save(folder / f"{i:06d}.png")


def build(mode: str, folder: Path, out: Path) -> dict:
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(out)], capture_output=True, text=True,
                         cwd=root)
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    r = json.loads(run.stdout.strip().splitlines()[-1])
    r["images_per_s"] = r["images"] / r["seconds"]
    return r


def search_speed(n_refs: int, n_queries: int, dim: int, k: int = 10) -> dict:
    import numpy as np
    import torch

    from bridge.reference import search

    g = torch.Generator().manual_seed(n_refs)
    refs = torch.nn.functional.normalize(torch.randn(n_refs, dim, generator=g), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(n_queries, dim, generator=g), dim=-1)
    t = time.perf_counter()
    s, idx = search(q, refs, k)
    ours = time.perf_counter() - t
    refs_np, q_np = refs.numpy(), q.numpy()
    t = time.perf_counter()
    base_idx = np.stack([np.argsort(-(refs_np @ row))[:k] for row in q_np])
    base = time.perf_counter() - t
    same = float((idx.numpy() == base_idx).all(axis=1).mean())
    return {"references": n_refs, "queries": n_queries, "dim": dim, "queries_per_s": n_queries / ours,
            "baseline_queries_per_s": n_queries / base, "speedup": base / ours, "same_top_k": same}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4096, help="the smaller collection: one full shard")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--dim", type=int, default=1024)
    args = ap.parse_args(argv)
    result: dict = {"build": {}, "search": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.images, args.images * args.scale):
            folder = Path(tmp) / f"images-{n}"
            make_images(folder, n)
            result["build"][n] = {mode: build(mode, folder, Path(tmp) / f"index-{mode}-{n}") for mode in ("stream", "naive")}
    for n_refs in (10_000, 100_000):
        result["search"].append(search_speed(n_refs, args.queries, args.dim))
    small, large = (result["build"][n] for n in (args.images, args.images * args.scale))
    mib = 1 / 2**20
    print(f"reference_index (toy-clip on 128 px PNGs; search dim {args.dim}, top-10, {args.queries} queries; "
          f"{__import__('torch').get_num_threads()} threads)")
    for n, r in result["build"].items():
        print(f"  build {n:>6} images: stream {r['stream']['images_per_s']:.0f} img/s, peak +"
              f"{r['stream']['peak_above_start'] * mib:.0f} MiB; load-all baseline {r['naive']['images_per_s']:.0f} "
              f"img/s, peak +{r['naive']['peak_above_start'] * mib:.0f} MiB")
    grow_s = large["stream"]["peak_above_start"] / max(1, small["stream"]["peak_above_start"])
    grow_n = large["naive"]["peak_above_start"] / max(1, small["naive"]["peak_above_start"])
    for s in result["search"]:
        print(f"  search {s['references']:>7} refs: {s['queries_per_s']:.0f} queries/s vs baseline "
              f"{s['baseline_queries_per_s']:.0f} ({s['speedup']:.1f}x), same top-10 on {s['same_top_k']:.1%}")
    result["memory_growth"] = {"stream": grow_s, "naive": grow_n, "collection_growth": args.scale}
    print(f"peak memory growth for {args.scale}x the images: stream {grow_s:.2f}x, load-all {grow_n:.2f}x; "
          f"search speedup vs full sort at 100k: {result['search'][-1]['speedup']:.1f}x")
    return result


if __name__ == "__main__":
    main()
