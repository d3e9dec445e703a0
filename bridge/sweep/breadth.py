"""Breadth: how much the pictures a model draws for one prompt differ across seeds (issue #14).

A translation can match the source's *average* image and still lose its breadth: if the target draws the
same picture at every seed, the translation has failed even when mean agreement is high. Three numbers per
set of renders of one prompt, all in the scorer's embedding space (unit vectors, distance = 1 - cosine):

- `mean_distance`: the mean over all pairs of seeds, with a percentile bootstrap interval that resamples
  *seeds*, not pairs (pairs that share a seed are not independent). A resample holds some seeds twice; the
  pairs of a seed with its own copy are left out, so a resample does not look narrower for repeating one.
- `clusters`: how many distinct pictures, by average-linkage agglomerative clustering (UPGMA, Sokal &
  Michener 1958) stopped at a stated distance: two groups merge while their mean pairwise distance is at
  most the threshold. Average linkage, because single linkage chains jittered copies of different pictures
  into one cluster and complete linkage splits one picture's jitter into many.
- the breadth ratio, target / source mean distance: < 1 where the target draws fewer looks than the source.

Pure functions over numpy arrays; no model is loaded here.
"""

from __future__ import annotations

import numpy as np

# The clustering threshold (distance = 1 - cosine). Calibrated on the toy world with toy-clip: the smallest of
# 0.15, 0.2, 0.25, ... 0.5 at which the 24 renders (seeds 0-23) of each of benchmarks/sweep_breadth.py's 8
# fully pinned prompts stay one cluster on both toy models. In that benchmark its 8 open prompts then split
# into 1.8 (toy-sd15) and 3.2 (toy-sd2) clusters on average, the pinned ones 1.0 (at 0.5: 1.2 and 1.2). Two
# scenes that differ in colour, size, position, fill or background are 0.29 to 0.42 apart on average; in
# shape alone 0.16, about as far as one scene's seeds can be (measured with a scratch script, CHANGELOG.md).
CLUSTER_THRESHOLD = 0.25


def distances(emb) -> np.ndarray:
    """The [n, n] matrix of 1 - cosine between rows of `emb` (any array of row vectors; normalised here)."""
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [seeds, dim], got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - x @ x.T, 0.0, 2.0)


def mean_distance(d: np.ndarray) -> float:
    """Mean of the off-diagonal pairs of a distance matrix (nan with fewer than two rows)."""
    n = len(d)
    return float(d[np.triu_indices(n, 1)].mean()) if n >= 2 else float("nan")


def bootstrap_mean_distance(d: np.ndarray, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean pairwise distance, resampling seeds (see the module doc)."""
    k = len(d)
    if k < 2:
        return (float("nan"), float("nan"))
    if k == 2:  # one pair: every resample with two distinct seeds is that pair
        return (float(d[0, 1]), float(d[0, 1]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n, k))
    sub = d[idx[:, :, None], idx[:, None, :]]
    distinct = idx[:, :, None] != idx[:, None, :]
    pairs = distinct.sum(axis=(1, 2))
    keep = pairs > 0  # a resample of one seed drawn k times says nothing about breadth: dropped
    means = np.sort((sub * distinct).sum(axis=(1, 2))[keep] / pairs[keep])
    m, n = mean_distance(d), len(means)
    lo, hi = means[int((1 - level) / 2 * n)], means[min(n - 1, int((1 + level) / 2 * n))]
    return (float(min(lo, m)), float(max(hi, m)))


def clusters(d: np.ndarray, threshold: float = CLUSTER_THRESHOLD) -> list[int]:
    """Average-linkage cluster label per row, merging while the closest two groups' mean distance is at most
    `threshold`. Labels are numbered in order of first appearance, so they are stable for a given input."""
    # Equal links (a symmetric set of renders) are broken by what the groups hold, never by row order, so the
    # count does not depend on the order of the seeds; links are compared at 1e-9 for the same reason (a mean
    # summed in another order differs in the last bits).
    profile = [tuple(np.round(np.sort(row), 9)) for row in d]
    groups = [[i] for i in range(len(d))]
    while len(groups) > 1:
        best, pair = None, None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ka, kb = sorted((sorted(profile[i] for i in groups[a]), sorted(profile[i] for i in groups[b])))
                key = (round(float(d[np.ix_(groups[a], groups[b])].mean()), 9), ka, kb)
                if best is None or key < best:
                    best, pair = key, (a, b)
        if best[0] > threshold:
            break
        a, b = pair
        groups[a] = sorted(groups[a] + groups.pop(b))
    labels = [0] * len(d)
    for g in groups:
        for i in g:
            labels[i] = min(g)
    order = {v: n for n, v in enumerate(dict.fromkeys(labels))}
    return [order[v] for v in labels]


def breadth(emb, threshold: float = CLUSTER_THRESHOLD, seed: int = 0) -> dict:
    """Breadth of one prompt's renders: {seeds, mean_distance, ci95, clusters, cluster_threshold}."""
    d = distances(emb)
    return {"seeds": len(d), "mean_distance": mean_distance(d), "ci95": list(bootstrap_mean_distance(d, seed=seed)),
            "clusters": len(set(clusters(d, threshold))) if len(d) else 0, "cluster_threshold": threshold}


def ratio(target: float, source: float) -> float | None:
    """Breadth ratio target / source; None where the source has no breadth to compare with."""
    if not np.isfinite(source) or not np.isfinite(target) or source <= 0:
        return None
    return float(target / source)


def ratio_ci(target: list[float], source: list[float], n: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Breadth ratio over prompts, mean(target) / mean(source), with a paired percentile bootstrap interval:
    prompts are resampled together on both sides, so how broad each prompt is cancels. Prompts without a
    finite breadth on either side (one seed) are left out."""
    pairs = [(t, s) for t, s in zip(target, source) if t is not None and s is not None and np.isfinite(t)
             and np.isfinite(s)]
    if not pairs:
        return {"ratio": None, "ci95": [None, None], "prompts": 0, "target_mean": None, "source_mean": None}
    t, s = np.array(pairs).T
    r = ratio(t.mean(), s.mean())
    means = {"prompts": len(pairs), "target_mean": float(t.mean()), "source_mean": float(s.mean())}
    if r is None:
        return {"ratio": None, "ci95": [None, None], **means}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(n, len(t)))
    ts, ss = t[idx].mean(axis=1), s[idx].mean(axis=1)
    draws = np.sort(ts[ss > 0] / ss[ss > 0])
    lo, hi = draws[int((1 - level) / 2 * len(draws))], draws[min(len(draws) - 1, int((1 + level) / 2 * len(draws)))]
    return {"ratio": r, "ci95": [float(min(lo, r)), float(max(hi, r))], **means}
