"""Reference index build and search (issue #14), each against a naive baseline in the same run.

    uv run python -m benchmarks.reference_index [--images 4096] [--scale 4] [--queries 256] [--dim 1024]
        [--parts build search approximate choose] [--approx-refs 1000000]

1. Build: `sd-bridge index` (streaming, shard by shard) on a folder of `--images` PNGs (toy-world drawings at
   128 px) and on one `--scale` times larger, each in a fresh process: images/s and peak memory above the
   process's memory before the build. Baseline: load every image, then embed them all (what a script does).
   Memory is flat when the streaming build's peak does not grow with the collection; the default sizes are
   one full shard (4,096 rows) and four.
2. Search: queries/s for exact top-10 search at 10k and 100k references of dimension `--dim` (1024 is the
   ViT-H-14 scorer's), by bridge.sweep.reference.search (chunked matrix product + running top-k) and by the
   baseline: one full similarity matrix and a full sort per query (numpy argsort).
3. Approximate (`--approx-refs`, default 1M, dimension `--dim`): an index of clustered synthetic embeddings
   (unit vectors around refs/20 random centres, cosine ~0.64 to their centre; scorer embeddings have such
   neighbourhoods, Gaussian noise has none), written as shards. In fresh processes: the approximate index
   built from the shards (seconds, peak memory above start); each search opened (memory after opening), its
   queries/s, and the approximate search's recall@10, top-1 agreement and top-1 similarity error against exact
   search, the baseline, for fresh queries; and for near-duplicates of references, how often each search finds
   the reference first.
4. Choose (`--parts choose`, 100k references): the candidates behind the choice of faiss IVF-SQ8, each built
   and searched the same way in one process (build time, speed and recall; memory is measured per process in
   part 3): faiss IVF-Flat, IVF-SQ8, IVF-fp16, and, when installed, hnswlib and usearch HNSW
   (`uv run --with hnswlib --with usearch python -m benchmarks.reference_index --parts choose`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorded

CHILD = r"""
import json, sys, time
from pathlib import Path

from benchmarks.reference_index import _rss as rss
import torch
from bridge.models import presets
from bridge.models.score import Scorer
mode, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
scorer = Scorer(presets.scorer('toy-clip'), device='cpu', batch_size=64)
scorer._load()
from PIL import Image
Image.open(next(folder.glob('*.png'))).convert('RGB')  # warm the decoders
before = rss('VmRSS:')
t = time.perf_counter()
if mode == 'stream':
    from bridge.sweep.reference import build_index, list_source
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

    from toyworld import world as w

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

    from bridge.sweep.reference import search

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


def clustered(n: int, dim: int, seed: int, refs: int, noise: float = 1.2):
    """`n` unit vectors around refs/20 random unit centres (the same centres for every `seed` given `refs`)."""
    import numpy as np

    centres = np.random.default_rng(refs).standard_normal((max(refs // 20, 1), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng, out = np.random.default_rng(seed), np.empty((n, dim), np.float32)
    for lo in range(0, n, 65536):
        m = min(65536, n - lo)
        g = rng.standard_normal((m, dim), dtype=np.float32)
        x = centres[rng.integers(0, len(centres), m)] + g * (noise / np.linalg.norm(g, axis=1, keepdims=True))
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def write_synthetic_index(root: Path, refs: int, dim: int) -> dict:
    """An index directory of `refs` synthetic embeddings in shards, as `sd-bridge index` writes them."""
    from bridge.sweep import reference as r

    (root / "shards").mkdir(parents=True)
    shards = []
    for k, lo in enumerate(range(0, refs, r.SHARD_ROWS)):
        emb = clustered(min(r.SHARD_ROWS, refs - lo), dim, 1 + k, refs)
        r._write_shard(root / "shards" / f"{k:05d}.parquet", [str(lo + i) for i in range(len(emb))],
                       [""] * len(emb), emb, f"synthetic-{k}")
        shards.append({"file": f"{k:05d}.parquet", "rows": len(emb), "fingerprint": f"synthetic-{k}"})
    meta = {"format": 1, "source": {"kind": "folder", "root": str(root), "image_column": None},
            "scorer": {"name": "synthetic"}, "rows": refs, "dim": dim, "shards": shards}
    (root / r.META).write_text(json.dumps(meta))
    return meta


def near_duplicates(root: Path, n: int, dim: int, noise: float = 0.3):
    """`n` references of an index, each moved a little (cosine ~0.96 to itself), and their rows."""
    import numpy as np

    from bridge.sweep import reference as r

    meta = json.loads((root / r.META).read_text())
    rng = np.random.default_rng(7)
    shards = rng.choice(len(meta["shards"]), min(16, len(meta["shards"])), replace=False)
    picked, rows = [], []
    for k in shards:
        emb = r._shard_embeddings(root, meta["shards"][k], dim, ("embedding",))[2]
        take = rng.choice(len(emb), min(len(emb), -(-n // len(shards))), replace=False)
        picked.append(emb[take])
        rows += [sum(s["rows"] for s in meta["shards"][:k]) + int(t) for t in take]
    x = np.concatenate(picked)[:n]
    g = rng.standard_normal(x.shape, dtype=np.float32)
    x = x + g * (noise / np.linalg.norm(g, axis=1, keepdims=True))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.asarray(rows[:n])


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _build_approximate(root: str) -> dict:
    import faiss  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from bridge.sweep import reference as r

    meta = json.loads((Path(root) / r.META).read_text())
    before, t = _rss("VmRSS:"), time.perf_counter()
    meta["approximate"] = r.build_approximate(Path(root), meta)
    seconds = time.perf_counter() - t
    (Path(root) / r.META).write_text(json.dumps(meta))
    return {"seconds": seconds, "peak_above_start": _rss("VmHWM:") - before, "kind": meta["approximate"]["kind"],
            "nprobe": meta["approximate"]["nprobe"], "file_bytes": (Path(root) / r.APPROXIMATE).stat().st_size}


def _open_and_search(root: str, queries, k: int = 10) -> dict:
    import faiss  # noqa: F401  (imported before measuring: libraries are not what an index holds)
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401

    from bridge.sweep.reference import ReferenceIndex

    before = _rss("VmRSS:")
    index = ReferenceIndex.open(root)
    held = _rss("VmRSS:") - before
    index.search(queries[:8], k)  # warm up
    # Searched again until 5 s have passed: one pass of approximate search takes a fraction of a second, too
    # short to time on a shared machine (two runs of a single pass gave 440 and 757 queries/s).
    t, passes = time.perf_counter(), 0
    while passes == 0 or time.perf_counter() - t < 5:
        sims, rows = index.search(queries, k)
        passes += 1
    seconds = time.perf_counter() - t
    return {"memory_after_open": held, "queries_per_s": passes * len(queries) / seconds, "sims": sims.numpy(),
            "rows": rows.numpy()}


def approximate(tmp: Path, refs: int, dim: int, n_queries: int) -> dict:
    import numpy as np

    from benchmarks.inference_backends import in_process
    from bridge.sweep import reference as r

    exact_dir, approx_dir = tmp / "exact-index", tmp / "approximate-index"
    t = time.perf_counter()
    write_synthetic_index(exact_dir, refs, dim)
    print(f"  ({refs:,} synthetic embeddings of dimension {dim} written as shards in {time.perf_counter() - t:.0f} s)",
          flush=True)
    approx_dir.mkdir()
    (approx_dir / "shards").symlink_to(exact_dir / "shards")
    (approx_dir / r.META).write_text((exact_dir / r.META).read_text())
    build = in_process(_build_approximate, str(approx_dir))
    # Two kinds of query: fresh points (their nearest references are only loosely near: cosine ~0.4), and
    # near-duplicates planted from references (cosine ~0.96 to their original), what the duplicate check asks.
    planted, originals = near_duplicates(exact_dir, n_queries, dim)
    queries = np.concatenate([clustered(n_queries, dim, 0, refs), planted])
    exact = in_process(_open_and_search, str(exact_dir), queries)
    approx = in_process(_open_and_search, str(approx_dir), queries)
    fresh = slice(0, n_queries)
    recall = float(np.mean([len(set(a) & set(b)) / a.size
                            for a, b in zip(approx["rows"][fresh], exact["rows"][fresh])]))
    top1 = float(np.mean(approx["rows"][fresh, 0] == exact["rows"][fresh, 0]))
    err = np.abs(approx["sims"][fresh, 0] - exact["sims"][fresh, 0])
    found = {name: float(np.mean(r["rows"][n_queries:, 0] == originals)) for name, r in (("exact", exact),
                                                                                           ("approximate", approx))}
    return {"references": refs, "dim": dim, "queries": n_queries, "build": build,
            "exact": {k: exact[k] for k in ("memory_after_open", "queries_per_s")},
            "approximate": {k: approx[k] for k in ("memory_after_open", "queries_per_s")},
            "recall_at_10": recall, "top1_same": top1, "top1_similarity_error_mean": float(err.mean()),
            "top1_similarity_error_max": float(err.max()), "near_duplicate_found_first": found,
            "speedup": approx["queries_per_s"] / exact["queries_per_s"],
            "memory_ratio": approx["memory_after_open"] / max(1, exact["memory_after_open"])}


def choose(refs: int, dim: int, n_queries: int) -> list[dict]:
    """Each candidate built on the same clustered embeddings and searched for the same queries (top-10)."""
    import importlib.util

    import faiss
    import numpy as np
    import torch

    from bridge.sweep.reference import search

    x, q = clustered(refs, dim, 1, refs), clustered(n_queries, dim, 0, refs)
    t = time.perf_counter()
    _, truth = search(torch.from_numpy(q), torch.from_numpy(x), 10)
    exact_qps, truth = n_queries / (time.perf_counter() - t), truth.numpy()
    nlist = int(4 * refs**0.5)

    def ivf(code):
        def build():
            index = faiss.index_factory(dim, f"IVF{nlist},{code}", faiss.METRIC_INNER_PRODUCT)
            index.train(x[:: max(1, refs // (64 * nlist))])
            index.add(x)
            index.nprobe = 32
            return index
        return build, lambda index: index.search(q, 10)[1]

    candidates = {f"faiss IVF{nlist},Flat": ivf("Flat"), f"faiss IVF{nlist},SQ8": ivf("SQ8"),
                  f"faiss IVF{nlist},SQfp16": ivf("SQfp16")}
    if importlib.util.find_spec("hnswlib"):
        import hnswlib

        def hnsw():
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=refs, ef_construction=128, M=16)
            index.add_items(x)
            index.set_ef(128)
            return index
        candidates["hnswlib HNSW M16 ef128"] = (hnsw, lambda index: index.knn_query(q, 10)[0])
    if importlib.util.find_spec("usearch"):
        from usearch.index import Index

        def usearch():
            index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128,
                          expansion_search=128)
            index.add(np.arange(refs), x)
            return index
        candidates["usearch HNSW f16 M16 ef128"] = (usearch, lambda index: index.search(q, 10).keys)
    rows = []
    for name, (build, find) in candidates.items():
        t = time.perf_counter()
        index = build()
        built = time.perf_counter() - t
        t = time.perf_counter()
        found = np.asarray(find(index))
        qps = n_queries / (time.perf_counter() - t)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]))
        rows.append({"name": name, "build_s": built, "queries_per_s": qps, "recall_at_10": recall,
                     "speedup": qps / exact_qps})
        del index
    return rows


@recorded("reference_index")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4096, help="the smaller collection: one full shard")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--parts", nargs="+", choices=["build", "search", "approximate", "choose"],
                    default=["build", "search", "approximate"])
    ap.add_argument("--approx-refs", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    result: dict = {}
    mib = 1 / 2**20
    print(f"reference_index (toy-clip on 128 px PNGs; search dim {args.dim}, top-10, {args.queries} queries; "
          f"{__import__('torch').get_num_threads()} threads)", flush=True)
    if "build" in args.parts:
        result["build"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in (args.images, args.images * args.scale):
                folder = Path(tmp) / f"images-{n}"
                make_images(folder, n)
                result["build"][n] = {mode: build(mode, folder, Path(tmp) / f"index-{mode}-{n}")
                                      for mode in ("stream", "naive")}
        for n, r in result["build"].items():
            print(f"  build {n:>6} images: stream {r['stream']['images_per_s']:.0f} img/s, peak +"
                  f"{r['stream']['peak_above_start'] * mib:.0f} MiB; load-all baseline "
                  f"{r['naive']['images_per_s']:.0f} img/s, peak +{r['naive']['peak_above_start'] * mib:.0f} MiB")
        small, large = (result["build"][n] for n in (args.images, args.images * args.scale))
        grow_s = large["stream"]["peak_above_start"] / max(1, small["stream"]["peak_above_start"])
        grow_n = large["naive"]["peak_above_start"] / max(1, small["naive"]["peak_above_start"])
        result["memory_growth"] = {"stream": grow_s, "naive": grow_n, "collection_growth": args.scale}
        print(f"  peak memory growth for {args.scale}x the images: stream {grow_s:.2f}x, load-all {grow_n:.2f}x",
              flush=True)
    if "search" in args.parts:
        result["search"] = [search_speed(n, args.queries, args.dim) for n in (10_000, 100_000)]
        for s in result["search"]:
            print(f"  search {s['references']:>7} refs: {s['queries_per_s']:.0f} queries/s vs baseline "
                  f"{s['baseline_queries_per_s']:.0f} ({s['speedup']:.1f}x), same top-10 on {s['same_top_k']:.1%}",
                  flush=True)
    if "choose" in args.parts:
        print("  choosing an approximate search (100,000 clustered references, top-10, recall against exact):")
        result["choose"] = choose(100_000, args.dim, args.queries)
        for c in result["choose"]:
            print(f"    {c['name']:28s} build {c['build_s']:5.0f} s  {c['queries_per_s']:6.0f} queries/s ({c['speedup']:4.1f}x exact)  recall@10 {c['recall_at_10']:.3f}",
                  flush=True)
    if "approximate" in args.parts:
        print(f"  approximate search (faiss IVF-SQ8) vs exact, {args.approx_refs:,} references:", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            a = result["approximate"] = approximate(Path(tmp), args.approx_refs, args.dim, args.queries)
        print(f"    build {a['build']['kind']} from the shards: {a['build']['seconds']:.0f} s, peak "
              f"+{a['build']['peak_above_start'] * mib:.0f} MiB, file {a['build']['file_bytes'] * mib:.0f} MiB")
        print(f"    opened: exact holds {a['exact']['memory_after_open'] * mib:.0f} MiB, approximate "
              f"{a['approximate']['memory_after_open'] * mib:.0f} MiB")
        print(f"    fresh queries: recall@10 {a['recall_at_10']:.3f}, same top-1 {a['top1_same']:.1%}, top-1 "
              f"similarity off by {a['top1_similarity_error_mean']:.4f} (mean), {a['top1_similarity_error_max']:.4f} "
              f"(max)")
        print(f"    near-duplicates of references: found first by exact search {a['near_duplicate_found_first']['exact']:.1%}"
              f", by approximate {a['near_duplicate_found_first']['approximate']:.1%}")
        print(f"approximate vs exact search at {args.approx_refs:,} references: {a['speedup']:.1f}x queries/s "
              f"({a['approximate']['queries_per_s']:.0f} vs {a['exact']['queries_per_s']:.0f}), "
              f"{a['memory_ratio']:.2f}x memory")
    return result


if __name__ == "__main__":
    main()
