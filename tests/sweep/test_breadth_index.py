"""Breadth metrics and the reference index: invariants, exactness and the on-disk cache (no models needed
except toy-clip for the index)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bridge.sweep import breadth as B
from bridge.sweep.reference import duplicate_report, Neighbour, search


def _points(groups: int, per: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.eye(16)[:groups] * 5
    return np.concatenate([c + rng.normal(0, spread, (per, 16)) for c in centres])


def test_breadth_counts_distinct_pictures_and_orders_spread():
    one, three = B.breadth(_points(1, 12, 0.3)), B.breadth(_points(3, 4, 0.3))
    assert one["clusters"] == 1 and three["clusters"] == 3
    assert one["ci95"][1] < three["ci95"][0]  # one look vs three: disjoint intervals
    assert one["ci95"][0] <= one["mean_distance"] <= one["ci95"][1]
    same = B.breadth(np.ones((5, 8)))
    assert same["mean_distance"] == pytest.approx(0, abs=1e-9) and same["clusters"] == 1


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 10), st.just(6)), elements=st.floats(-1, 1)).filter(
    lambda a: (np.linalg.norm(a, axis=1) > 1e-3).all()), st.randoms(use_true_random=False),
    st.floats(0.1, 100))
def test_breadth_ignores_seed_order_and_embedding_scale(emb, rnd, scale):
    order = list(range(len(emb)))
    rnd.shuffle(order)
    a, b = B.breadth(emb), B.breadth(emb[order] * scale)
    assert a["mean_distance"] == pytest.approx(b["mean_distance"], abs=1e-9)
    assert a["clusters"] == b["clusters"]
    assert 0 <= a["mean_distance"] <= 2


def test_bootstrap_leaves_out_a_seed_paired_with_its_own_copy():
    # Two seeds far apart, one pair: every resample that has both seeds sees that one distance, never a 0.
    d = B.distances(np.array([[1.0, 0], [0, 1.0]]))
    assert B.bootstrap_mean_distance(d) == (1.0, 1.0)
    d3 = B.distances(np.eye(3))  # all pairs at distance 1: no resample can look narrower
    assert B.bootstrap_mean_distance(d3) == (1.0, 1.0)


def test_breadth_ratio_over_prompts():
    r = B.ratio_ci([0.2, 0.4, 0.3], [0.2, 0.4, 0.3])
    assert r["ratio"] == pytest.approx(1) and r["ci95"][0] <= 1 <= r["ci95"][1]
    half = B.ratio_ci([0.1, 0.2, 0.15, 0.1], [0.2, 0.4, 0.3, 0.2])
    assert half["ratio"] == pytest.approx(0.5) and half["ci95"][1] < 1
    assert B.ratio_ci([None, 0.2], [0.1, None])["ratio"] is None  # one seed: no breadth to compare
    assert B.ratio(0.3, 0.0) is None


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 12), st.integers(1, 7), st.integers(0, 10_000))
def test_chunked_search_equals_a_full_sort(n_refs, k, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    refs = torch.nn.functional.normalize(torch.randn(n_refs, 8, generator=g), dim=-1)
    q = torch.randn(5, 8, generator=g)
    sims, rows = search(q, refs, k, chunk=chunk)
    full = torch.nn.functional.normalize(q, dim=-1) @ refs.T
    want = torch.sort(full, dim=1, descending=True).values[:, : min(k, n_refs)]
    assert torch.allclose(sims, want, atol=1e-6)
    assert torch.allclose(torch.gather(full, 1, rows), sims, atol=1e-6)  # the rows hold those similarities


def test_duplicate_report_counts_renders_at_or_above_the_threshold():
    near = [[Neighbour("a.png", "", s, 0)] for s in (0.95, 0.9, 0.5)]
    rep = duplicate_report(near, 0.9)
    assert rep["duplicates"] == 2 and rep["duplicate_fraction"] == pytest.approx(2 / 3)


def _drawings(folder, scenes, seeds=(0, 1)):
    from toyworld import world as w

    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(scenes):
        for k in seeds:
            w.draw(s, 100 + k).save(folder / f"s{i}-{k}.png")


def test_index_build_is_cached_resumable_and_finds_the_same_picture(tmp_path, capsys):
    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex
    from toyworld import world as w

    scenes = [w.Scene(shape=s, colour=c, background=b) for s, c, b in
              (("circle", "red", "white"), ("square", "blue", "black"), ("triangle", "yellow", "beige"))]
    _drawings(tmp_path / "ref", scenes)
    assert main(["index", str(tmp_path / "ref"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip"]) == 0
    assert "6 embedded this run" in capsys.readouterr().out
    index = ReferenceIndex.open(tmp_path / "idx")
    assert len(index) == 6 and index.scorer == "toy-clip" and (tmp_path / "idx" / "config.json").is_file()
    # A rerun embeds nothing; a changed image is embedded again.
    assert main(["index", str(tmp_path / "ref"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip"]) == 0
    assert "0 embedded this run" in capsys.readouterr().out
    w.draw(scenes[0], 999).save(tmp_path / "ref" / "s0-0.png")
    assert main(["index", str(tmp_path / "ref"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip"]) == 0
    assert "6 embedded this run" in capsys.readouterr().out  # one shard holds all six
    # A drawing at an unseen seed finds a drawing of its own scene first.
    from bridge.models import presets
    from bridge.models.score import Scorer

    emb = Scorer(presets.scorer("toy-clip")).embed_images([w.draw(s, 5000) for s in scenes])
    found = index.neighbours(emb, 2)
    assert [n[0].path.split("-")[0] for n in found] == ["s0", "s1", "s2"]
    assert found[0][0].similarity >= found[0][1].similarity
    with pytest.raises(ValueError, match="embedded with scorer 'toy-clip', not 'tiny-clip'"):
        index.check_scorer("tiny-clip")
    # The same index with an approximate search index beside it finds the same pictures; --search exact drops it.
    assert main(["index", str(tmp_path / "ref"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip",
                 "--search", "approximate"]) == 0
    assert "0 embedded this run" in capsys.readouterr().out and (tmp_path / "idx" / "approximate.faiss").is_file()
    approx = ReferenceIndex.open(tmp_path / "idx")
    assert approx.embeddings is None and approx.approximate is not None
    assert [n[0].path for n in approx.neighbours(emb, 2)] == [n[0].path for n in found]
    assert main(["index", str(tmp_path / "ref"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip",
                 "--search", "exact"]) == 0
    assert not (tmp_path / "idx" / "approximate.faiss").exists() and ReferenceIndex.open(tmp_path / "idx").approximate is None


def _clustered(n: int, centres, seed: int):
    """Unit vectors around random unit `centres`: embeddings with neighbourhoods, as a scorer's have."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, centres.shape[1])).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_approximate_search_over_many_shards_agrees_with_exact_search_and_is_kept_while_the_shards_are(tmp_path):
    from bridge.sweep import reference as r

    # 3 shards of clustered vectors, the last one short: faiss numbers rows in the order the shards are added.
    centres = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = _clustered(2 * r.SHARD_ROWS + 1000, centres, seed=1)
    shards = []
    (tmp_path / "shards").mkdir()
    for k, lo in enumerate(range(0, len(x), r.SHARD_ROWS)):
        rows = x[lo : lo + r.SHARD_ROWS]
        r._write_shard(tmp_path / "shards" / f"{k:05d}.parquet", [f"{lo + i}" for i in range(len(rows))],
                       [""] * len(rows), rows * 3.0, f"print{k}")  # stored unnormalised: the index normalises
        shards.append({"file": f"{k:05d}.parquet", "rows": len(rows), "fingerprint": f"print{k}"})
    meta = {"rows": len(x), "dim": 64, "shards": shards, "scorer": {"name": "toy-clip"},
            "source": {"kind": "folder", "root": str(tmp_path), "image_column": None}}
    meta["approximate"] = r.build_approximate(tmp_path, meta)
    (tmp_path / r.META).write_text(json.dumps(meta))
    index = r.ReferenceIndex.open(tmp_path)
    queries = _clustered(200, centres, seed=2)  # fresh points around the same centres
    sims, rows = index.search(queries, 10)
    exact_sims, exact_rows = r.search(torch.from_numpy(queries), torch.from_numpy(x), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), exact_rows.tolist())])
    assert recall >= 0.9, recall
    assert (rows[:, 0] == exact_rows[:, 0]).float().mean() >= 0.9
    assert float((sims[:, 0] - exact_sims[:, 0]).abs().max()) < 0.02  # 8-bit codes: close similarities
    assert [n.path for n in index.neighbours(queries[:1], 3)[0]] == [str(i) for i in rows[0, :3].tolist()]
    # Unchanged shards: the same index is kept, not rebuilt; a changed shard rebuilds it.
    stamp = (tmp_path / r.APPROXIMATE).stat().st_mtime_ns
    assert r.build_approximate(tmp_path, meta) == meta["approximate"]
    assert (tmp_path / r.APPROXIMATE).stat().st_mtime_ns == stamp
    meta["shards"][1]["fingerprint"] = "changed"
    assert r.build_approximate(tmp_path, meta)["stamp"] != meta["approximate"]["stamp"]


def test_index_of_a_saved_dataset_and_bad_references(tmp_path, capsys):
    import datasets

    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex
    from toyworld import world as w

    images = [w.draw(w.Scene(colour=c), 1) for c in ("red", "green")]
    ds = datasets.Dataset.from_dict({"picture": images, "text": ["a red one", "a green one"]},
                                    features=datasets.Features({"picture": datasets.Image(), "text": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    assert main(["index", str(tmp_path / "ds"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip"]) == 0
    index = ReferenceIndex.open(tmp_path / "idx")
    assert index.paths == ["#0", "#1"] and index.captions == ["a red one", "a green one"]
    assert index.image(1).size == (32, 32)
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["index", str(tmp_path / "empty"), "--out", str(tmp_path / "idx2"), "--scorer", "toy-clip"]) == 2
    assert "no images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # a usage error, before anything is loaded
        main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "idx3")])
    assert stop.value.code == 2 and "missing does not exist" in capsys.readouterr().err


def test_a_gathered_dataset_is_indexed_with_its_own_embeddings_and_a_hub_name_offline_is_one_line(tmp_path, capsys):
    import datasets
    import numpy as np

    from bridge.cli import main
    from bridge.sweep.reference import ReferenceIndex
    from toyworld import world as w
    from data.gather import features

    emb = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
    rows = {"prompt": ["a", "b", "c"], "negative_prompt": [""] * 3, "seed": [1, 2, 3], "seed_index": [0] * 3,
            "prompt_index": [0, 1, 2], "origin": [""] * 3, "image": [w.draw(w.Scene(), k) for k in range(3)],
            "embedding": emb.tolist(), "preset": ["toy-sd15"] * 3, "revision": ["toy-v1"] * 3,
            "scorer": ["toy-clip"] * 3, "settings": ["{}"] * 3}
    datasets.Dataset.from_dict(rows, features=features()).save_to_disk(str(tmp_path / "gathered"))
    assert main(["index", str(tmp_path / "gathered"), "--out", str(tmp_path / "idx"), "--scorer", "toy-clip"]) == 0
    assert "0 embedded this run" in capsys.readouterr().out  # the gathered embeddings were reused
    index = ReferenceIndex.open(tmp_path / "idx")
    want = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert np.allclose(index.embeddings.numpy(), want, atol=1e-6) and index.captions == ["a", "b", "c"]
    assert main(["index", "hf:no-such-owner/no-such-set", "--out", str(tmp_path / "hub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not load dataset 'no-such-owner/no-such-set' (split train)" in err[0]
