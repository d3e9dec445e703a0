"""Issue #14's toy-world acceptance numbers (sweep breadth, duplicate check, eval's breadth ratio), in one run.

    uv run python -m benchmarks.sweep_breadth [--prompts 8] [--seeds 24] [--scenes 60] [--out DIR]

1. Breadth separates pinned from open prompts. `sd-bridge sweep` on each toy model with prompts in that model's
   own dialect: prompts that say all six attributes vs prompts that leave shape and colour (and most of the
   rest) open. Per group, the mean breadth with a bootstrap interval over prompts; the ratio open / pinned;
   and per (pinned, open) pair whether the two prompts' own intervals are disjoint.
2. The duplicate check. A reference index (`sd-bridge index`) of the world's ground-truth drawings of
   `--scenes` scenes; toy-sd15 renders of those scenes ("in") and of `--novel-scenes` scenes that are not in
   it ("out"), from captions that say every attribute. The rates at the default threshold carry a bootstrap
   interval over scenes. The threshold is also calibrated on half the scenes and tested on the other half,
   two ways: Youden's J (both errors weigh alike), and the highest threshold that still flags 95% of that
   half's reference-scene renders (the issue's floor; fewest false flags above it). Baseline in the same run:
   the same search on raw pixels instead of scorer embeddings. Upper bound: ground-truth drawings at unseen
   seeds as the queries (the scorer alone).
   Diagnosis: for renders whose nearest reference is another scene, how often each attribute differs; and
   how often the position read back from a render's pixels is the one its caption asked for.
3. eval's breadth ratio: `sd-bridge eval --oracle` on held-out prompts: target / source breadth for identity
   and for the oracle's correct translation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorded
from toyworld import world

HELDOUT = world.PROMPTS_DIR / "heldout.jsonl"


def toy_prompts(dialect, n: int, seed: int) -> tuple[list[str], list[str]]:
    """(pinned, open) prompts in `dialect`: pinned say all six attributes (no default is left to the model);
    open ones say at most one of size, position, background, fill, and never shape or colour."""
    from toyworld import world as w

    rng = random.Random(f"sweep-breadth-{dialect.name}-{seed}")
    pinned: list[str] = []
    while len(pinned) < n:
        spec = w.Spec(shape=rng.choice(w.SHAPES), colour=rng.choice(w.NAMED_COLOURS),
                      size=rng.choice(["small", "large"]), position=rng.choice(w.POSITIONS[1:]),
                      fill=rng.choice(sorted(dialect.fills)), background=rng.choice(list(w.BACKGROUNDS)))
        if (p := w.write(spec, dialect)) not in pinned:
            pinned.append(p)
    options = [w.Spec()] + [w.Spec(size=s) for s in ("small", "large")] + \
              [w.Spec(position=p) for p in w.POSITIONS[1:]] + [w.Spec(background=b) for b in w.BACKGROUNDS] + \
              [w.Spec(fill=f) for f in sorted(dialect.fills)]
    rng.shuffle(options)
    return pinned, [w.write(s, dialect) for s in options[:n]]


def breadth_separates(out: Path, n: int, seeds: int) -> dict:
    from bridge.commands.sweep import SweepConfig, run_sweep
    from eval.metrics import bootstrap_ci, mean
    from toyworld import world as w

    result = {}
    for model, dialect, row in (("toy-sd15", w.SOURCE, "source"), ("toy-sd2", w.TARGET, "identity")):
        pinned, open_ = toy_prompts(dialect, n, 0)
        path = out / f"{model}.txt"
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(pinned + open_) + "\n")
        report = run_sweep(SweepConfig(prompts=str(path), out=out / model, rows=[row], seeds=seeds, source="toy-sd15",
                                       target="toy-sd2", scorer="toy-clip", device="cpu", render_batch=24),
                           log=lambda *_: None)
        b = {r["prompt"]: r["breadth"] for r in report["rows"]}
        groups = {"pinned": [b[p]["mean_distance"] for p in pinned], "open": [b[p]["mean_distance"] for p in open_]}
        ci = {g: bootstrap_ci(v) for g, v in groups.items()}
        pairs = [(b[p]["ci95"][1] < b[o]["ci95"][0]) for p in pinned for o in open_]
        result[model] = {
            **{f"{g}_mean": mean(v) for g, v in groups.items()}, **{f"{g}_ci95": list(ci[g]) for g in groups},
            "ratio_open_to_pinned": mean(groups["open"]) / mean(groups["pinned"]),
            "disjoint": ci["pinned"][1] < ci["open"][0],
            "pairs_disjoint": sum(pairs) / len(pairs),
            "clusters_pinned": mean([b[p]["clusters"] for p in pinned]),
            "clusters_open": mean([b[p]["clusters"] for p in open_]),
            "most_pinned": max(pinned, key=lambda p: -b[p]["mean_distance"]),
            "per_prompt": {p: {"group": "pinned" if p in pinned else "open", "breadth": b[p]["mean_distance"],
                               "ci95": b[p]["ci95"], "clusters": b[p]["clusters"]} for p in pinned + open_},
        }
    return result


def _scenes(n: int, seed: int) -> list:
    from toyworld import world as w

    rng, out = random.Random(f"duplicates-{seed}"), []
    while len(out) < n:
        s = dataclasses.replace(w.random_scene(rng), colour=rng.choice(w.NAMED_COLOURS))
        if s not in out:
            out.append(s)
    return out


def _caption(scene) -> str:
    from toyworld import world as w

    return w.write(w.Spec(**{a: getattr(scene, a) for a in w.ATTRIBUTES}), w.SOURCE)


def _youden(inside: list[float], outside: list[float]) -> float:
    """The threshold with the largest true-positive minus false-positive rate (Youden 1950)."""
    cands = sorted(set(inside) | set(outside))
    return max(cands, key=lambda t: sum(s >= t for s in inside) / len(inside) - sum(s >= t for s in outside)
               / len(outside))


def _at_recall(inside: list[float], floor: float = 0.95) -> float:
    """The highest threshold that still flags `floor` of `inside`."""
    return sorted(inside)[int(len(inside) * (1 - floor))]


def _rates(inside: list[float], outside: list[float], t: float) -> dict:
    return {"threshold": t, "flagged_in": sum(s >= t for s in inside) / len(inside),
            "flagged_out": sum(s >= t for s in outside) / len(outside)}


def _flat(groups: list[list]) -> list:
    return [x for g in groups for x in g]


def _rates_ci(inside: list[list[float]], outside: list[list[float]], t: float) -> dict:
    """`_rates` over scenes' renders, with a bootstrap interval over scenes: a scene's renders share its caption,
    so they are not independent draws (every scene has as many renders, so the mean of scene rates is the rate)."""
    from eval.metrics import bootstrap_ci

    per_scene = lambda groups: [sum(x >= t for x in g) / len(g) for g in groups]  # noqa: E731
    return {**_rates(_flat(inside), _flat(outside), t), "in_ci95": list(bootstrap_ci(per_scene(inside))),
            "out_ci95": list(bootstrap_ci(per_scene(outside)))}


def duplicate_check(out: Path, n_scenes: int, n_novel: int, ref_seeds: int = 8, render_seeds: int = 4) -> dict:
    import numpy as np
    import torch

    from bridge.commands.index import IndexConfig, run_index
    from bridge.models import presets
    from bridge.models.render import Renderer
    from bridge.models.score import Scorer
    from bridge.sweep.reference import DUPLICATE_THRESHOLD, ReferenceIndex, search
    from toyworld import world as w

    scenes = _scenes(n_scenes + n_novel, 1)
    ref, novel = scenes[:n_scenes], scenes[n_scenes:]
    folder = out / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(ref):
        for k in range(ref_seeds):
            w.draw(s, 10_000 + k).save(folder / f"scene{i:03d}-{k}.png")
    t = time.perf_counter()
    run_index(IndexConfig(reference=str(folder), out=out / "index", scorer="toy-clip", device="cpu"),
              log=lambda *_: None)
    index_s = time.perf_counter() - t
    index = ReferenceIndex.open(out / "index")
    renderer, scorer = Renderer(presets.pipeline("toy-sd15")), Scorer(presets.scorer("toy-clip"), batch_size=256)

    def nearest(group: list, emb) -> list[list[float]]:  # per scene, its renders' top-1 similarity
        sims = index.search(emb, 1)[0][:, 0].tolist()
        return [sims[i * render_seeds:(i + 1) * render_seeds] for i in range(len(group))]

    def renders(group: list) -> list:
        prompts = [_caption(s) for s in group for _ in range(render_seeds)]
        return renderer(prompts, [k for _ in group for k in range(render_seeds)], batch_size=32)

    def top_scenes(emb) -> list[int]:  # the scene of each query's nearest reference (files are sceneNNN-K.png)
        return [int(index.paths[r][5:8]) for r in index.search(emb, 1)[1][:, 0].tolist()]

    def own_scene(tops: list[int], per: int) -> float:  # how often the top-1 reference is of the query's own scene
        return sum(t == i // per for i, t in enumerate(tops)) / len(tops)

    def wrong_attributes(tops: list[int], per: int, own: list | None = None, keep: list[bool] | None = None) -> dict:
        """Where a render's nearest reference is another scene: how often each attribute of that scene differs
        from the render's own, against chance (two random scenes). An attribute the renderer gets wrong differs
        more often than chance; one it gets right, less. With `own` (the queries' scenes, not in the index) and
        `keep` (which queries to count), the same over those queries."""
        own = own or ref
        near = [(own[i // per], ref[t]) for i, t in enumerate(tops)
                if (keep[i] if keep else True) and (own is not ref or t != i // per)]
        values = {"colour": w.NAMED_COLOURS, "shape": w.SHAPES, "size": w.SIZES, "position": w.POSITIONS,
                  "fill": w.FILLS, "background": w.BACKGROUNDS}
        return {"renders": len(near), "of": len(tops), **{
            a: {"differs": sum(getattr(x, a) != getattr(y, a) for x, y in near) / max(1, len(near)),
                "chance": 1 - 1 / len(values[a])} for a in w.ATTRIBUTES}}

    def placed(images, per: int) -> float:  # how often the position read back (world.read_image) is the one asked
        return sum(w.read_image(im)["position"] == ref[i // per].position for i, im in enumerate(images)) / len(images)

    imgs_in, imgs_out = renders(ref), renders(novel)
    emb_in, emb_out = scorer.embed_images(imgs_in), scorer.embed_images(imgs_out)
    sim_in, sim_out = nearest(ref, emb_in), nearest(novel, emb_out)
    # Pixels as the baseline embedding: the same exact search, on flattened 32x32 RGB centred per image.
    from PIL import Image

    def pixels(images) -> torch.Tensor:
        a = np.stack([np.asarray(im.convert("RGB").resize((32, 32)), np.float32).ravel() for im in images])
        return torch.nn.functional.normalize(torch.from_numpy(a - a.mean(axis=1, keepdims=True)), dim=-1)

    ref_px = pixels([Image.open(p) for p in sorted(folder.glob("*.png"))])
    px_in = [search(pixels(imgs_in), ref_px, 1)[0][:, 0].tolist()[i * render_seeds:(i + 1) * render_seeds]
             for i in range(len(ref))]
    px_out = [search(pixels(imgs_out), ref_px, 1)[0][:, 0].tolist()[i * render_seeds:(i + 1) * render_seeds]
              for i in range(len(novel))]
    # Upper bound: the true drawings at unseen seeds as queries (no renderer error, only the scorer's).
    drawings_in = [w.draw(s, 20_000) for s in ref]
    drawn_in = scorer.embed_images(drawings_in)
    draw_in = index.search(drawn_in, 1)[0][:, 0].tolist()
    draw_out = index.search(scorer.embed_images([w.draw(s, 20_000) for s in novel]), 1)[0][:, 0].tolist()
    hi, ho = n_scenes // 2, n_novel // 2
    result = {"reference_images": len(index), "index_seconds": index_s, "scenes_in": n_scenes,
              "scenes_out": n_novel, "renders_per_scene": render_seeds}
    for name, (a, b) in {"scorer": (sim_in, sim_out), "pixels": (px_in, px_out)}.items():
        t = _youden(_flat(a[:hi]), _flat(b[:ho]))  # calibrated on the first half of each group's scenes
        result[name] = {"calibrated": _rates(_flat(a[hi:]), _flat(b[ho:]), t)}  # tested on the other half
        result[name]["youden_j"] = result[name]["calibrated"]["flagged_in"] - result[name]["calibrated"]["flagged_out"]
    result["scorer"]["at_recall_95"] = _rates(_flat(sim_in[hi:]), _flat(sim_out[ho:]), _at_recall(_flat(sim_in[:hi])))
    result["scorer"]["default"] = _rates_ci(sim_in, sim_out, DUPLICATE_THRESHOLD)
    result["scorer"]["in_percentiles"] = np.percentile(_flat(sim_in), [5, 50, 95]).round(3).tolist()
    result["scorer"]["out_percentiles"] = np.percentile(_flat(sim_out), [5, 50, 95]).round(3).tolist()
    tb = _youden(draw_in[:hi], draw_out[:ho])
    result["drawings_as_queries"] = _rates(draw_in[hi:], draw_out[ho:], tb)
    result["drawings_as_queries"]["default"] = _rates_ci([[x] for x in draw_in], [[x] for x in draw_out],
                                                         DUPLICATE_THRESHOLD)
    tops_in = top_scenes(emb_in)
    result["own_scene_top1"] = {"renders": own_scene(tops_in, render_seeds),
                                "drawings": own_scene(top_scenes(drawn_in), 1)}
    result["wrong_attributes"] = wrong_attributes(tops_in, render_seeds)
    # The false flags: renders of scenes outside the set flagged at the default, and how their nearest
    # reference's scene differs from theirs (an attribute the scorer hardly sees differs more than chance).
    result["false_flags"] = wrong_attributes(top_scenes(emb_out), render_seeds, own=novel,
                                             keep=[x >= DUPLICATE_THRESHOLD for x in _flat(sim_out)])
    result["position_read_back"] = {"renders": placed(imgs_in, render_seeds), "drawings": placed(drawings_in, 1),
                                    "chance": 1 / len(w.POSITIONS)}
    return result


def eval_breadth(out: Path, n: int, seeds: int) -> dict:
    from eval.config import EvalConfig
    from eval.run import run_eval

    report = run_eval(EvalConfig(prompts=str(HELDOUT), out=out / "eval", source="toy-sd15", target="toy-sd2",
                                 scorer="toy-clip", oracle=True, no_syntax=True, seeds=seeds, limit=n, device="cpu",
                                 render_batch=16, progress=False), log=lambda *_: None)
    return {name: {"breadth_ratio": a["breadth_ratio"], "ci95": a["breadth_ratio_ci95"],
                   "agreement": a["agreement_mean"]} for name, a in report["strategies"].items()}


@recorded("sweep_breadth")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="pinned and open prompts per model")
    ap.add_argument("--seeds", type=int, default=24, help="seeds per prompt for breadth")
    ap.add_argument("--scenes", type=int, default=60, help="scenes in the reference set")
    ap.add_argument("--novel-scenes", type=int, default=240, help="scenes not in it, whose renders must not be "
                    "flagged (more than --scenes: the false-flag rate is the smaller number, so needs more scenes)")
    ap.add_argument("--eval-prompts", type=int, default=60, help="held-out prompts for eval's breadth ratio")
    ap.add_argument("--out", type=Path, default=None, help="keep the sweeps, index and report here")
    ap.add_argument("--parts", nargs="*", default=["breadth", "duplicates", "eval"], help="measure only these")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t0 = time.perf_counter()
        sep = breadth_separates(out / "breadth", args.prompts, args.seeds) if "breadth" in args.parts else {}
        dup = duplicate_check(out / "duplicates", args.scenes, args.novel_scenes) if "duplicates" in args.parts else {}
        ev = eval_breadth(out / "eval", args.eval_prompts, 4) if "eval" in args.parts else {}
        result = {"breadth": sep, "duplicates": dup, "eval": ev, "seconds": time.perf_counter() - t0}
        (out / "sweep_breadth.json").write_text(json.dumps(result, indent=2))
    print(f"sweep_breadth (toy world, {args.prompts} pinned + {args.prompts} open prompts x {args.seeds} seeds per "
          f"model; {args.scenes} reference scenes, {args.novel_scenes} others; {result['seconds']:.0f} s)")
    for model, r in sep.items():
        print(f"  {model}: breadth pinned {r['pinned_mean']:.3f} [{r['pinned_ci95'][0]:.3f}, {r['pinned_ci95'][1]:.3f}]"
              f" vs open {r['open_mean']:.3f} [{r['open_ci95'][0]:.3f}, {r['open_ci95'][1]:.3f}]: intervals "
              f"{'disjoint' if r['disjoint'] else 'OVERLAP'}; ratio open/pinned {r['ratio_open_to_pinned']:.2f}; "
              f"pairs with disjoint per-prompt intervals {r['pairs_disjoint']:.0%}; clusters {r['clusters_pinned']:.1f}"
              f" vs {r['clusters_open']:.1f}")
    if dup:
        _print_duplicates(dup)
    if ev:
        print("  eval breadth ratio (target / source): " + ", ".join(
            f"{k} {v['breadth_ratio']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" for k, v in ev.items()))
    lift = {n: dup[n]["calibrated"]["flagged_in"] / max(1e-9, dup[n]["calibrated"]["flagged_out"])
            for n in ("scorer", "pixels")} if dup else {}
    last = ["open / pinned breadth: " + ", ".join(f"{m} {r['ratio_open_to_pinned']:.2f}" for m, r in sep.items())
            ] if sep else []
    last += [f"duplicate flag rate in / out: scorer {lift['scorer']:.2f} vs pixel baseline {lift['pixels']:.2f}"
             ] if lift else []
    print("; ".join(last))
    return result


def _pct(rates: dict, side: str) -> str:
    lo, hi = rates[f"{side}_ci95"]
    return f"{rates[f'flagged_{side}']:.1%} [{lo:.1%}, {hi:.1%}]"


def _print_duplicates(dup: dict) -> None:
    for name in ("scorer", "pixels"):
        c = dup[name]["calibrated"]
        print(f"  duplicates by {name}: threshold {c['threshold']:.3f} (calibrated on half the scenes): flags "
              f"{c['flagged_in']:.1%} of renders of reference scenes, {c['flagged_out']:.1%} of the others "
              f"(J {dup[name]['youden_j']:.2f})")
    r = dup["scorer"]["at_recall_95"]
    print(f"  duplicates by scorer: threshold {r['threshold']:.3f} (the highest that flags 95% of one half's reference"
          f" scene renders): flags {r['flagged_in']:.1%} / {r['flagged_out']:.1%} on the other half")
    d = dup["scorer"]["default"]
    print(f"  at the default threshold {d['threshold']}: in {_pct(d, 'in')}, out {_pct(d, 'out')}; "
          f"target >= 95% / <= 5%: {'met' if d['flagged_in'] >= 0.95 and d['flagged_out'] <= 0.05 else 'NOT met'}")
    u = dup["drawings_as_queries"]
    print(f"  upper bound, true drawings as queries: in {u['flagged_in']:.1%}, out {u['flagged_out']:.1%} (calibrated);"
          f" at the default threshold in {_pct(u['default'], 'in')}, out {_pct(u['default'], 'out')}")
    o = dup["own_scene_top1"]
    print(f"  nearest reference is a drawing of the query's own scene: {o['renders']:.1%} of toy-sd15 renders, "
          f"{o['drawings']:.1%} of true drawings")
    pr = dup["position_read_back"]
    print(f"  position read back from the pixels is the one asked for on {pr['renders']:.1%} of toy-sd15 renders, "
          f"{pr['drawings']:.1%} of true drawings (chance {pr['chance']:.0%})")
    wa = dup["wrong_attributes"]
    print(f"  the {wa['renders']} of {wa['of']} renders nearest to another scene: how often that scene differs, per "
          "attribute (chance): " + _differs(wa))
    ff = dup["false_flags"]
    print(f"  the {ff['renders']} of {ff['of']} renders of other scenes flagged at the default: how often their "
          "nearest reference's scene differs, per attribute (chance): " + _differs(ff))


def _differs(wa: dict) -> str:
    return ", ".join(f"{a} {wa[a]['differs']:.0%} ({wa[a]['chance']:.0%})"
                     for a in ("position", "shape", "fill", "size", "colour", "background"))


if __name__ == "__main__":
    main()
