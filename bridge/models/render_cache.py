"""Renders are the cost (DESIGN §4): a disk cache of target renders and their scorer embeddings.

Key = sha256(preset, revision, settings, prompt, negative prompt, seed). An image is rendered once, ever:
within a call duplicates are rendered once, across calls and runs the PNG on disk is reused. Embeddings
are cached per (image key, scorer). Hit/miss counters feed the training log and benchmarks.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Callable, Sequence

from bridge.files import atomic_write


def render_bar(enabled: bool = True):
    """A `progress` for RenderCache: a tqdm bar per call that renders, counting its renders with an ETA (issue
    #43: eval was silent for 49 s while its source renders ran, sweep for 207 s). None when disabled."""
    if not enabled:
        return None

    def start(total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc or "render", unit="render", dynamic_ncols=True)

    return start


class RenderCache:
    def __init__(self, root: Path | str, renderer, scorer=None, batch_size: int = 4,
                 progress: Callable[[int, str], object] | None = None):
        """`progress(total, desc)`, when given, returns a bar (tqdm-like: `update(n)`, `close()`) for each call
        that has images to render; cached images cost nothing and move no bar."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.renderer, self.scorer, self.batch_size, self.progress = renderer, scorer, batch_size, progress
        self.hits = self.misses = 0
        self.seconds = {"render": 0.0, "score": 0.0}
        self._settings = json.dumps(renderer.settings.as_dict(), sort_keys=True)

    def key(self, prompt: str, negative: str | None, seed: int) -> str:
        p = self.renderer.preset
        blob = json.dumps([p.name, p.revision, self._settings, prompt, negative or "", int(seed)])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _png(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def images(self, prompts: Sequence[str], seeds: Sequence[int], negatives: Sequence[str | None] | None = None,
               desc: str = "") -> list:
        """Images for (prompt, seed, negative) triples; only keys never seen before are rendered (`desc` names
        them on the progress bar)."""
        from PIL import Image

        negatives = list(negatives) if negatives is not None else [None] * len(prompts)
        keys = [self.key(p, n, s) for p, n, s in zip(prompts, negatives, seeds)]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in todo and not self._png(k).exists():
                todo[k] = i
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        fresh_by_key: dict = {}
        if todo:
            idx = list(todo.values())
            t = time.perf_counter()
            bar = self.progress(len(idx), desc) if self.progress is not None else None
            try:
                fresh = self.renderer([prompts[i] for i in idx], [int(seeds[i]) for i in idx],
                                      [negatives[i] for i in idx], batch_size=self.batch_size,
                                      on_batch=None if bar is None else bar.update)
            finally:
                if bar is not None:
                    bar.close()
            for i, image in zip(idx, fresh):
                path = self._png(keys[i])
                path.parent.mkdir(exist_ok=True)
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                atomic_write(path, buf.getvalue())  # a reader never sees half a PNG
                fresh_by_key[keys[i]] = image  # PNG is lossless: no need to read it back
            self.seconds["render"] += time.perf_counter() - t
        out = []
        for k in keys:
            if k in fresh_by_key:
                out.append(fresh_by_key[k])
                continue
            with Image.open(self._png(k)) as im:
                out.append(im.convert("RGB"))
        return out

    def embeddings(self, prompts: Sequence[str], seeds: Sequence[int], negatives: Sequence[str | None] | None = None,
                   desc: str = ""):
        """Scorer image embeddings [N, D] of the renders, each computed once per (image, scorer)."""
        import numpy as np
        import torch

        negatives = list(negatives) if negatives is not None else [None] * len(prompts)
        keys = [self.key(p, n, s) for p, n, s in zip(prompts, negatives, seeds)]
        tag = self.scorer.preset.name.replace("/", "_")
        paths = [self._png(k).with_suffix(f".{tag}.npy") for k in keys]
        first: dict[str, int] = {}  # each missing embedding once, at its first index
        for i, p in enumerate(paths):
            if not p.exists():
                first.setdefault(keys[i], i)
        if first:
            idx = list(first.values())
            images = self.images([prompts[i] for i in idx], [seeds[i] for i in idx], [negatives[i] for i in idx], desc)
            t = time.perf_counter()
            emb = self.scorer.embed_images(images).numpy()
            self.seconds["score"] += time.perf_counter() - t
            for row, i in zip(emb, idx):
                buf = io.BytesIO()
                np.save(buf, row.astype(np.float32))
                atomic_write(paths[i], buf.getvalue())
        # Cached renders count as hits here too (images() counted only the ones it was asked for).
        self.hits += len(keys) - len(first)
        return torch.from_numpy(np.stack([np.load(p) for p in paths]))

    def snapshot(self) -> dict:
        return {"renders": self.misses, "cache_hits": self.hits, "time_render": self.seconds["render"],
                "time_score": self.seconds["score"]}

    def step_stats(self, before: dict) -> dict:
        """Counters since `before` (a snapshot): renders, cache hits, seconds rendering and scoring."""
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in now}
