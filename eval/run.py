"""`sd-bridge eval`: how much each translation strategy makes the target draw what the source drew.

Steps: held-out prompts with source renders (reused from a gathered dataset, or rendered once and
cached) -> each strategy's translations (identity, syntax, adapters, a translations file) -> target
renders at the same seeds (cached) -> per-prompt agreement, text-image score, tokens, length -> aggregates
with bootstrap intervals and paired comparisons against identity -> report.json / report.md /
report.html + plots + the resolved config. Under accelerate, processes split the prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bridge.models import presets
from bridge.syntax.policy import MigrationPolicy
from bridge.config import print_json_summary, save_config, summary_log
from eval.config import EvalConfig
from eval.metrics import bootstrap_ci, gap_recovered, mean, paired, regressions

DATASET_COLUMNS = ("prompt", "negative_prompt", "seed", "prompt_index", "embedding", "image", "scorer", "preset")


@dataclass
class Item:
    prompt: str
    negative: str | None
    seeds: list[int]
    source_emb: torch.Tensor  # [seeds, D]
    source_images: list


def _load_dataset(cfg: EvalConfig) -> list[Item]:
    import datasets

    ds = datasets.load_from_disk(cfg.prompts)
    missing = [c for c in DATASET_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"{cfg.prompts} lacks column(s) {missing}; give a dataset written by `sd-bridge gather`")
    if set(ds["scorer"]) != {cfg.scorer}:
        raise ValueError(f"{cfg.prompts} holds embeddings from scorer {sorted(set(ds['scorer']))}, not {cfg.scorer!r}")
    if set(ds["preset"]) != {presets.pipeline(cfg.source).name}:
        raise ValueError(f"{cfg.prompts} was rendered with {sorted(set(ds['preset']))}, but --source is {cfg.source!r}")
    items: dict[int, Item] = {}
    for row in ds:
        it = items.setdefault(row["prompt_index"], Item(row["prompt"], row["negative_prompt"], [], [], []))
        if len(it.seeds) < cfg.seeds:
            it.seeds.append(int(row["seed"]))
            it.source_emb.append(row["embedding"])
            it.source_images.append(row["image"])
    out = [Item(i.prompt, i.negative, i.seeds, torch.tensor(i.source_emb), i.source_images)
           for _, i in sorted(items.items())]
    return out[: cfg.limit] if cfg.limit else out


def _load_file(cfg: EvalConfig, source_cache) -> list[Item]:
    from bridge.io.clean import read_prompt_file
    from bridge.models.render import derive_seed

    records = read_prompt_file(cfg.prompts, cfg.prompt_column, cfg.negative_column, cfg.limit)
    items = []
    for r in records:
        seeds = [derive_seed(cfg.seed, r.prompt, k) for k in range(cfg.seeds)]
        items.append(Item(r.prompt, r.negative_prompt, seeds, None, None))
    flat = [(it, s) for it in items for s in it.seeds]
    emb = source_cache.embeddings([it.prompt for it, _ in flat], [s for _, s in flat], [it.negative for it, _ in flat],
                                  desc=f"source renders ({cfg.source})")
    images = source_cache.images([it.prompt for it, _ in flat], [s for _, s in flat], [it.negative for it, _ in flat])
    k = 0
    for it in items:
        it.source_emb, it.source_images = emb[k : k + len(it.seeds)], images[k : k + len(it.seeds)]
        k += len(it.seeds)
    return items


def _translations_file(cfg: EvalConfig, items: list[Item]) -> list[str]:
    from bridge.io.sources import read_records

    table = {r.prompt: r.negative_prompt for r in read_records(str(cfg.translations), "prompt",
                                                                cfg.translations_column)}
    missing = [it.prompt for it in items if it.prompt not in table]
    if missing:
        raise ValueError(f"{cfg.translations} has no translation for {len(missing)} of {len(items)} prompts "
                         f"(first: {missing[0][:80]!r}); it needs a `prompt` column equal to the source prompts")
    return [table[it.prompt] or "" for it in items]


def train_overlap(cfg: EvalConfig, items: list[Item], log=print) -> dict[str, int]:
    """Per adapter, how many eval prompts it was trained on. Seeds derive from the prompt, so an overlap
    would even reuse cached renders: refused unless --allow-train-overlap, then counted in the report."""
    from bridge.models.rewriter import prompt_hash, train_prompt_hashes

    out = {}
    for path in cfg.adapter:
        hashes = train_prompt_hashes(path)
        if hashes is None:
            continue
        seen = [it.prompt for it in items if prompt_hash(it.prompt) in hashes]
        if seen and not cfg.allow_train_overlap:
            raise ValueError(f"{len(seen)} of {len(items)} eval prompts were in the training data of adapter {path} "
                             f"(first: {seen[0][:80]!r}); evaluate on held-out prompts, or pass "
                             "--allow-train-overlap to score them anyway")
        if seen:
            log(f"warning: {len(seen)} of {len(items)} eval prompts were in the training data of adapter {path}")
        out[f"adapter:{Path(path).name}"] = len(seen)
    return out


def check_adapters(cfg: EvalConfig) -> None:
    """Each --adapter is an adapter for this target: checked before any render, so a typo costs no render time
    and leaves no report directory behind."""
    from bridge.models.rewriter import AdapterMeta

    for path in cfg.adapter:
        meta = AdapterMeta.load(path)
        if presets.pipeline(meta.target).name != presets.pipeline(cfg.target).name:
            raise ValueError(f"adapter {path} was trained for target {meta.target!r}, not {cfg.target!r}")


def strategies(cfg: EvalConfig, items: list[Item], device: str) -> dict[str, dict]:
    """name -> {prompts, negatives, fallbacks}: every strategy's translations of the items."""
    from bridge.translator import Translator

    prompts, negatives = [it.prompt for it in items], [it.negative for it in items]
    out = {"identity": {"prompts": prompts, "negatives": negatives, "fallbacks": 0}}
    translators = []
    if not cfg.no_syntax:
        translators.append(("syntax", Translator.from_pretrained(None, cfg.target, MigrationPolicy.of(cfg))))
    for path in cfg.adapter:
        translator = Translator.from_pretrained(path, cfg.target, MigrationPolicy.of(cfg), device=device)
        translators.append((f"adapter:{Path(path).name}", translator))
    for name, tr in translators:
        res = tr.translate(prompts, negatives)
        out[name] = {"prompts": [r.translated_prompt for r in res],
                     "negatives": [r.translated_negative_prompt for r in res],
                     "fallbacks": sum(r.fallback for r in res),
                     "rejected": [{"prompt": r.prompt, "rewrite": r.rejected,
                                   "message": next(w["message"] for w in r.warnings if w["code"] == "rewrite-unfaithful")}
                                  for r in res if r.unfaithful]}
    if cfg.oracle:
        out["oracle"] = _oracle(items, _file_oracles(cfg.prompts))
    if cfg.translations is not None:
        out[f"file:{Path(cfg.translations).stem}"] = {"prompts": _translations_file(cfg, items),
                                                      "negatives": negatives, "fallbacks": 0}
    names = MigrationPolicy.of(cfg).embedding_names()
    for strat in out.values():
        strat.update(faithfulness_counts(prompts, strat["prompts"], names))
    return out


def faithfulness_counts(sources: list[str], texts: list[str], names) -> dict:
    """What a strategy's texts did to their sources' content words (bridge.models.faithfulness): words kept,
    words in the sources, words invented; summed, so processes add theirs."""
    from bridge.models.faithfulness import content, diff, leaf_words

    kept = total = invented = 0
    for source, text in zip(sources, texts):
        before, after = leaf_words(source, names), leaf_words(text, names)
        edit = diff(before, after)
        total += len(content(before))
        kept += len(content(before)) - len(edit.dropped)
        invented += len(edit.added)
    return {"words_kept": kept, "words": total, "words_invented": invented}


def faithfulness_summary(parts: list[dict], prompts: int) -> dict:
    """Per strategy over all processes: share of source content words kept, invented words per prompt, guard
    rejections, and the rejected rewrites themselves."""
    words = sum(p["words"] for p in parts)
    rejected = [r for p in parts for r in p["rejected"]]
    return {"words_kept": sum(p["words_kept"] for p in parts) / words if words else 1.0,
            "words_invented_per_prompt": sum(p["words_invented"] for p in parts) / prompts if prompts else 0.0,
            "guard_rejections": len(rejected), "rejected": rejected}


def _file_oracles(prompts: str) -> dict[str, tuple[str, str]]:
    """prompt -> (oracle, oracle negative) from a JSONL prompts file whose rows carry them (`sd-bridge toyworld
    prompts` writes them, woven with A1111 syntax or dressed in outside text as the prompts are); else empty."""
    path = Path(prompts)
    if path.suffix != ".jsonl" or not path.is_file():
        return {}
    out = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line) if line.strip() else {}
            if isinstance(row, dict) and isinstance(row.get("oracle"), str) and isinstance(row.get("prompt"), str):
                out[row["prompt"]] = (row["oracle"], row.get("oracle_negative_prompt") or "")
    return out


def _oracle(items: list[Item], given: dict[str, tuple[str, str]] | None = None) -> dict:
    """The toy world's correct translations: the prompts file's own (`given`, where it has the prompt), else
    written from the drift table (never learned)."""
    from toyworld.world import NotAToyPrompt, oracle

    prompts, negatives = [], []
    for it in items:
        if given and it.prompt in given:
            prompt, negative = given[it.prompt]
            prompts.append(prompt)
            negatives.append(negative)
            continue
        try:
            o = oracle(it.prompt, it.negative or "")
        except NotAToyPrompt as err:
            raise ValueError(f"--oracle needs toy-world prompts (sd-bridge toyworld prompts): {err}") from None
        prompts.append(o.prompt)
        negatives.append(o.negative_prompt)
    return {"prompts": prompts, "negatives": negatives, "fallbacks": 0}


def drifts_of(prompt: str, source: presets.PipelinePreset) -> list[str] | None:
    """The toy-world drifts a prompt carries, for a toy source (its A1111 syntax and words from outside the world
    aside: `world.strip_outside`); None where that does not apply."""
    if not source.toy:
        return None
    from toyworld.world import NotAToyPrompt, SOURCE, drifts_of as toy_drifts, read, strip_outside

    inside = strip_outside(prompt)
    if not inside:
        return None
    try:
        return toy_drifts(read(inside, SOURCE))
    except NotAToyPrompt:
        return None


def score_strategy(items: list[Item], strat: dict, target_cache, scorer, on_prompts=lambda n: None,
                   chunk: int = 8, index=None, top_k: int = 3) -> list[dict]:
    """Per prompt: the target's renders of the strategy's text against the source renders, `chunk` prompts
    at a time so that `on_prompts` can move a progress bar. Breadth: the mean pairwise distance of the
    prompt's renders across its seeds (bridge.sweep.breadth). With a reference `index`, each render's nearest
    references."""
    from bridge.syntax.tokens import token_budget

    text_emb = scorer.embed_texts([it.prompt for it in items])
    rows = []
    for lo in range(0, len(items), chunk):
        part = range(lo, min(lo + chunk, len(items)))
        flat = [(i, s) for i in part for s in items[i].seeds]
        emb = target_cache.embeddings([strat["prompts"][i] for i, _ in flat], [s for _, s in flat],
                                      [strat["negatives"][i] for i, _ in flat])
        k = 0
        for i in part:
            it = items[i]
            e = emb[k : k + len(it.seeds)]
            k += len(it.seeds)
            per_seed = torch.nn.functional.cosine_similarity(e, it.source_emb, dim=-1).tolist()
            counts, _ = token_budget(strat["prompts"][i], truncates=True)
            row = {"text": strat["prompts"][i], "negative": strat["negatives"][i], "agreement": mean(per_seed),
                   "per_seed": per_seed, "text_score": float((e @ text_emb[i]).mean()),
                   "tokens": sum(counts), "length": len(strat["prompts"][i]),
                   "breadth": _breadth(e)}
            if index is not None:
                row["nearest"] = [[n.as_dict() for n in ns] for ns in index.neighbours(e, top_k)]
            rows.append(row)
        on_prompts(len(part))
    return rows


def aggregate(names: list[str], rows: list[dict], cfg: EvalConfig) -> dict:
    from bridge.sweep.breadth import ratio_ci
    from bridge.sweep.reference import duplicate_report, Neighbour

    base = [r["strategies"]["identity"]["agreement"] for r in rows]
    prompts = [r["prompt"] for r in rows]
    out = {}
    for name in names:
        vals = [r["strategies"][name]["agreement"] for r in rows]
        # Breadth ratio target / source: < 1 where the strategy makes the target draw fewer looks.
        wide = ratio_ci([r["strategies"][name]["breadth"] for r in rows], [r["source_breadth"] for r in rows],
                        seed=cfg.seed)
        out[name] = {
            "breadth_mean": wide["target_mean"],
            "breadth_ratio": wide["ratio"], "breadth_ratio_ci95": wide["ci95"],
            "agreement_mean": mean(vals), "agreement_ci95": list(bootstrap_ci(vals, seed=cfg.seed)),
            "text_score_mean": mean([r["strategies"][name]["text_score"] for r in rows]),
            "tokens_mean": mean([r["strategies"][name]["tokens"] for r in rows]),
            "length_mean": mean([r["strategies"][name]["length"] for r in rows]),
            "vs_identity": paired(vals, base, tie=cfg.tie, seed=cfg.seed),
            "regressions": regressions(prompts, vals, base, cfg.regression_threshold),
            "by_drift": by_drift(rows, name, cfg),
        }
        if cfg.reference is not None:
            near = [[Neighbour(**n) for n in ns] for r in rows for ns in r["strategies"][name]["nearest"]]
            out[name]["duplicates"] = duplicate_report(near, cfg.duplicate_threshold)
        if "oracle" in names:  # the share of the oracle's gain over identity (paired bootstrap interval)
            gap = gap_recovered(vals, base, [r["strategies"]["oracle"]["agreement"] for r in rows], seed=cfg.seed)
            out[name]["gap_recovered"], out[name]["gap_recovered_ci95"] = gap["fraction"], gap["ci95"]
    return out


def by_drift(rows: list[dict], name: str, cfg: EvalConfig) -> dict:
    """Per toy-world drift ("none" for prompts without): prompts, mean agreement and delta vs identity, and,
    with --oracle, the fraction of the oracle's gap this strategy recovers."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("drifts") is None:
            continue
        for d in r["drifts"] or ["none"]:
            groups.setdefault(d, []).append(r)
    out = {}
    for drift, rs in sorted(groups.items()):
        vals = [r["strategies"][name]["agreement"] for r in rs]
        base = [r["strategies"]["identity"]["agreement"] for r in rs]
        entry = {"prompts": len(rs), "agreement_mean": mean(vals),
                 **{k: v for k, v in paired(vals, base, tie=cfg.tie, seed=cfg.seed).items()}}
        if "oracle" in rs[0]["strategies"] and drift != "none":
            gap = gap_recovered(vals, base, [r["strategies"]["oracle"]["agreement"] for r in rs], seed=cfg.seed)
            entry["gap_recovered"], entry["gap_recovered_ci95"] = gap["fraction"], gap["ci95"]
        out[drift] = entry
    return out


def _progress(cfg: EvalConfig, state, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", desc=desc, position=state.process_index, dynamic_ncols=True,
                disable=not cfg.progress or total == 0)


def run_eval(cfg: EvalConfig, log=print) -> dict:
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from bridge.models.loading import resolve_device
    from bridge.models.render import Renderer
    from bridge.models.render_cache import RenderCache, render_bar
    from bridge.models.score import Scorer
    from eval.report import write_report

    from bridge.models.presets import TOY_NOTE

    log = summary_log(cfg, log)
    state = PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    if cfg.resolve_presets() and state.is_main_process:
        log(TOY_NOTE)
    check_adapters(cfg)
    index = _reference(cfg)  # a wrong index is refused before any render
    device = str(state.device) if state.num_processes > 1 else resolve_device(cfg.device)
    cache_root = cfg.cache_dir or cfg.out / "render-cache"
    scorer = Scorer(presets.scorer(cfg.scorer), device=device)
    source, target = presets.pipeline(cfg.source), presets.pipeline(cfg.target)
    # 1. Held-out prompts with their source renders.
    is_dataset = Path(cfg.prompts).is_dir() and (Path(cfg.prompts) / "state.json").is_file()
    if Path(cfg.prompts).is_dir() and not is_dataset:
        raise FileNotFoundError(f"{cfg.prompts} is a directory but not a gathered dataset (no state.json)")
    source_cache = RenderCache(cache_root, Renderer(source, device=device), scorer, cfg.render_batch,
                               progress=render_bar(cfg.progress and state.is_main_process))
    items = _load_dataset(cfg) if is_dataset else _load_file(cfg, source_cache)
    overlap = train_overlap(cfg, items, log if state.is_main_process else (lambda *_: None))
    mine = list(range(state.process_index, len(items), state.num_processes))
    local = [items[i] for i in mine]
    # 2. Every strategy's translations, 3. target renders and scores.
    target_cache = RenderCache(cache_root, Renderer(target, device=device), scorer, cfg.render_batch)
    strats = strategies(cfg, local, device) if local else {}
    with _progress(cfg, state, len(local) * len(strats), f"eval ({len(strats)} strategies)") as bar:
        per = {name: score_strategy(local, strat, target_cache, scorer, bar.update, index=index, top_k=cfg.top_k)
               for name, strat in strats.items()}
    rows = [{"index": i, "prompt": it.prompt, "negative_prompt": it.negative, "seeds": it.seeds,
             "drifts": drifts_of(it.prompt, source), "source_breadth": _breadth(it.source_emb),
             "strategies": {name: per[name][j] for name in per}}
            for j, (i, it) in enumerate(zip(mine, local))]
    fallbacks = {name: {"rejected": [], **{k: s[k] for k in ("fallbacks", "words_kept", "words", "words_invented",
                                                              "rejected") if k in s}}
                 for name, s in strats.items()}
    rows = sorted(gather_object(rows), key=lambda r: r["index"]) if state.num_processes > 1 else rows
    fallbacks = gather_object([fallbacks]) if state.num_processes > 1 else [fallbacks]
    if not state.is_main_process:
        return {}
    names = list(rows[0]["strategies"]) if rows else []
    # 4. Aggregates and the report.
    agg = aggregate(names, rows, cfg)
    for name in names:
        parts = [f[name] for f in fallbacks if name in f]
        agg[name]["fallbacks"] = sum(p["fallbacks"] for p in parts)
        agg[name]["faithfulness"] = faithfulness_summary(parts, len(rows))
        if name in overlap:
            agg[name]["train_overlap"] = overlap[name]
    renders = target_cache.snapshot()
    grids = _grid_images(items[: cfg.grid_prompts], rows[: cfg.grid_prompts], names, target_cache)
    report = {"source": presets.describe(source), "target": presets.describe(target),
              "scorer": presets.describe(scorer.preset), "prompts": len(rows), "seeds": cfg.seeds,
              "strategies": agg, "rows": rows, "renders": renders}
    cfg.out.mkdir(parents=True, exist_ok=True)
    report["learning_curves"] = learning_curves(cfg)
    paths = write_report(report, grids, cfg.out)
    save_config(cfg, cfg.out, presets={"source": report["source"], "target": report["target"],
                                       "scorer": report["scorer"]})
    for name in names:
        a = agg[name]
        wide = "" if a["breadth_ratio"] is None else (f", breadth ratio {a['breadth_ratio']:.2f} "
                                                      f"[{a['breadth_ratio_ci95'][0]:.2f}, {a['breadth_ratio_ci95'][1]:.2f}]")
        dup = f", duplicates {a['duplicates']['duplicate_fraction']:.0%}" if "duplicates" in a else ""
        f = a["faithfulness"]
        guard = f", guard rejections {f['guard_rejections']}" if name.startswith("adapter:") else ""
        log(f"{name:>24s}: agreement {a['agreement_mean']:.4f} [{a['agreement_ci95'][0]:.4f}, "
            f"{a['agreement_ci95'][1]:.4f}], vs identity {a['vs_identity']['delta_mean']:+.4f} "
            f"(win {a['vs_identity']['win']:.0%} / tie {a['vs_identity']['tie']:.0%} / loss {a['vs_identity']['loss']:.0%})"
            f"{wide}{dup}; words kept {f['words_kept']:.1%}, invented {f['words_invented_per_prompt']:.2f} per "
            f"prompt{guard}")
    log(f"report: {paths['html']}")
    print_json_summary(cfg, {"report": paths, "prompts": report["prompts"], "seeds": cfg.seeds,
                             "strategies": {name: {k: v for k, v in agg[name].items() if k != "regressions"}
                                            | {"regressions": len(agg[name]["regressions"]),
                                               "faithfulness": {k: v for k, v in agg[name]["faithfulness"].items()
                                                                if k != "rejected"}} for name in names}})
    return report


def _breadth(emb: torch.Tensor) -> float | None:
    """Mean pairwise distance of one prompt's renders across its seeds; None with one seed."""
    from bridge.sweep.breadth import distances, mean_distance

    return mean_distance(distances(emb.numpy())) if len(emb) >= 2 else None


def _reference(cfg: EvalConfig):
    """The --reference index, opened once and checked against the scorer; None without one."""
    if cfg.reference is None:
        return None
    from bridge.sweep.reference import ReferenceIndex

    index = ReferenceIndex.open(cfg.reference)
    index.check_scorer(cfg.scorer)
    return index


def learning_curves(cfg: EvalConfig) -> dict[str, str]:
    """Each adapter's learning curves (written by training beside it), copied into the report directory."""
    import shutil

    from bridge.models.rewriter import CURVES

    out = {}
    for path in cfg.adapter:
        if (Path(path) / CURVES).is_file():
            dest = cfg.out / f"curves-{Path(path).name}.png"
            shutil.copyfile(Path(path) / CURVES, dest)
            out[f"adapter:{Path(path).name}"] = str(dest)
    return out


def _grid_images(items: list[Item], rows: list[dict], names: list[str], target_cache) -> list[dict]:
    """Per grid prompt: the source image and each strategy's target image at the first seed (all cached)."""
    grids = []
    for it, row in zip(items, rows):
        seed = it.seeds[0]
        cells = [("source", it.prompt, it.source_images[0])]
        for name in names:
            s = row["strategies"][name]
            image = target_cache.images([s["text"]], [seed], [s["negative"]])[0]
            cells.append((name, s["text"], image))
        grids.append({"prompt": it.prompt, "seed": seed, "cells": cells})
    return grids
