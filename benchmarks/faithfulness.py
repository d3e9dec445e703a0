"""The faithfulness guard (#40) on a trained toy adapter: harmful rewrites caught, correct ones let through.

    uv run python -m benchmarks.faithfulness --out DIR [--adapter DIR] [--heldout N] [--seed S] [--syntax SHARE]

1. adapter    the documented toy recipe (benchmarks.toyworld_learning: gather, train) -> DIR/adapter, with
              the edit record training writes; or --adapter, an adapter trained elsewhere
2. probes     the committed probe set (tests/fixtures/faithfulness_probes.jsonl: prompts outside the toy world,
              and toy prompts mixed with words from outside it) and every prompt of ../shared/prompts
              (a1111.jsonl, plain.jsonl), translated with --faithfulness strict, lenient and off. Per setting:
              rows whose content words changed against the syntax strategy's output without a `rewrite-*`
              warning (silent changes: 0 is the target), probe words the translation lost, and the share of
              prompts without a toy-world word that come back unchanged (the target: >= 99%)
3. held-out   fresh held-out toy prompts (`toyworld prompts --split heldout`, a seed the tests do not use): the
              adapter's rewrites with the guard off that equal the oracle's text (correct rewrites), and the
              share of them the guard lets through; then `sd-bridge eval --oracle` with the guard strict and
              off, and the share of the oracle's gap each recovers, with paired bootstrap intervals. `--syntax`
              (default 0.5) weaves A1111 syntax into that share of them and the same syntax into their oracles
              (`world.weave`: weights, emphasis, BREAK, comma-separated clauses, a LoRA tag); the woven prompts'
              fallbacks are counted apart (#40 item 3: at most 5%)

The held-out prompts say class members no training prompt says (world.HELDOUT_WORDS, #39): a correct rewrite of
such a word is counted apart, since the guard must let it through although the adapter never met the word.
The last line reads `silent changes (strict): N of M rows`.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.results import recorded
from toyworld import world

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "tests" / "fixtures" / "faithfulness_probes.jsonl"
SHARED = ROOT.parent / "shared" / "prompts"
MODES = ("strict", "lenient", "off")
HELDOUT_SEED = 40_404  # fresh held-out prompts: no test draws with this seed
@functools.cache
def toy_words() -> frozenset[str]:
    """Every word the toy world's source dialect can say: a prompt without any is outside the world."""
    d = world.SOURCE
    words = set(world.SHAPES) | set(world.BACKGROUNDS) | {"background", "shape"} | set(world.POSITIONS)
    words |= {w for table in (d.colours, d.sizes, d.fills, world.TARGET.colours, world.TARGET.sizes)
              for w in table.values()}
    words |= {m for members in world.SYNONYMS.values() for m in members}
    words |= {w for phrase in d.artists for w in phrase.split()[1:]}
    return frozenset(words)


def read_rows() -> list[dict]:
    rows = [dict(json.loads(line), source="probes") for line in PROBES.read_text(encoding="utf-8").splitlines()]
    for name in ("a1111.jsonl", "plain.jsonl"):
        for line in (SHARED / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append({"prompt": r["prompt"], "negative_prompt": r.get("negative_prompt"), "source": name})
    return rows


def probe(adapter: Path, rows: list[dict]) -> dict:
    """Step 2: per guard setting, silent content changes, lost probe words, unchanged prompts outside the world."""
    from bridge.models.faithfulness import diff, leaf_words
    from bridge.syntax.policy import MigrationPolicy
    from bridge.translator import Translator

    prompts, negatives = [r["prompt"] for r in rows], [r.get("negative_prompt") for r in rows]
    syntax = Translator.from_pretrained(None, "toy-sd2").translate(prompts, negatives)
    outside = [i for i, r in enumerate(rows) if not set(leaf_words(r["prompt"])) & toy_words()]
    out = {"rows": len(rows), "outside_rows": len(outside), "modes": {}}
    for mode in MODES:
        tr = Translator.from_pretrained(adapter, policy=MigrationPolicy(faithfulness=mode), cache=None)
        t = time.perf_counter()
        res = tr.translate(prompts, negatives)
        seconds = time.perf_counter() - t
        silent, lost, examples = 0, 0, []
        for r, s, row in zip(res, syntax, rows):
            warned = any(w["code"].startswith("rewrite-") for w in r.warnings)
            edit = diff(leaf_words(s.translated_prompt), leaf_words(r.translated_prompt))
            if edit.changed and not warned:
                silent += 1
                if len(examples) < 8:
                    examples.append({"prompt": r.prompt, "translation": r.translated_prompt})
            kept = leaf_words(r.translated_prompt)
            lost += sum(w not in kept for w in row.get("keep", []))
        unchanged = sum(res[i].translated_prompt == syntax[i].translated_prompt for i in outside)
        out["modes"][mode] = {
            "silent_changes": silent, "silent_examples": examples,
            "rejected": sum(r.unfaithful for r in res), "probe_words_lost": lost,
            "probe_words": sum(len(r.get("keep", [])) for r in rows),
            "outside_unchanged": unchanged / len(outside) if outside else 1.0, "seconds": seconds}
    return out


def heldout(adapter: Path, out: Path, n: int, seed: int, eval_seeds: int, syntax: float = 0.0) -> dict:
    """Step 3: correct rewrites let through, and the gap recovered with the guard strict and off."""
    from bridge.syntax.policy import MigrationPolicy
    from bridge.translator import Translator
    from eval.config import EvalConfig
    from eval.run import run_eval

    rows = world.weave(world.generate_prompts(n, seed, "heldout"), syntax, seed)
    path = out / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    prompts = [r["prompt"] for r in rows]
    free = Translator.from_pretrained(adapter, policy=MigrationPolicy(faithfulness="off"), cache=None)
    guarded = Translator.from_pretrained(adapter, policy=MigrationPolicy(faithfulness="strict"), cache=None)
    off, strict = free.translate(prompts), guarded.translate(prompts)
    correct = [i for i, (r, row) in enumerate(zip(off, rows)) if r.translated_prompt == row["oracle"]
               and r.translated_prompt != row["prompt"]]
    changed = [i for i, r in enumerate(off) if r.translated_prompt != prompts[i]]
    result = {"prompts": n, "seed": seed, "rewritten": len(changed), "correct": len(correct),
              "correct_passed": sum(strict[i].translated_prompt == off[i].translated_prompt for i in correct),
              # #39's held-out class members: words the adapter never met, whose correct rewrite must pass.
              "correct_unseen": sum(bool(world.unseen_words(prompts[i])) for i in correct),
              "correct_unseen_passed": sum(bool(world.unseen_words(prompts[i])) and
                                           strict[i].translated_prompt == off[i].translated_prompt for i in correct),
              "rewritten_passed": sum(strict[i].translated_prompt == off[i].translated_prompt for i in changed),
              "syntax": syntax, "woven": sum(bool(r.get("syntax")) for r in rows),
              "woven_fallbacks": sum(bool(r.get("syntax")) and any(w["code"] == "rewrite-fallback" for w in t.warnings)
                                     for r, t in zip(rows, strict)),
              "woven_correct": sum(bool(rows[i].get("syntax")) for i in correct),
              "rejected": [{"prompt": strict[i].prompt, "rewrite": strict[i].rejected}
                           for i in range(n) if strict[i].unfaithful][:20], "gap": {}}
    for mode in ("strict", "off"):
        report = run_eval(EvalConfig(prompts=str(path), out=out / f"report-{mode}", source="toy-sd15",
                                     target="toy-sd2", scorer="toy-clip", adapter=[adapter], oracle=True,
                                     no_syntax=True, seeds=eval_seeds, seed=0, render_batch=16, device="cpu",
                                     cache_dir=out / "render-cache", faithfulness=mode, progress=False),
                          log=lambda *_: None)
        a = next(v for k, v in report["strategies"].items() if k.startswith("adapter:"))
        result["gap"][mode] = {"gap_recovered": a["gap_recovered"], "gap_recovered_ci95": a["gap_recovered_ci95"],
                               "agreement": a["agreement_mean"], "guard_rejections":
                               a["faithfulness"]["guard_rejections"], "words_kept": a["faithfulness"]["words_kept"]}
    return result


@recorded("faithfulness")
def main(argv: list[str] | None = None) -> dict:
    from benchmarks.toyworld_learning import Recipe, train_adapter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the adapter, prompts and eval reports go here")
    ap.add_argument("--adapter", type=Path, default=None, help="a trained toy adapter (default: train the recipe)")
    ap.add_argument("--heldout", type=int, default=200, help="fresh held-out toy prompts")
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED, help="their seed")
    ap.add_argument("--eval-seeds", type=int, default=2, help="render seeds per held-out prompt")
    ap.add_argument("--syntax", type=float, default=0.5, help="share of the held-out prompts woven with A1111 syntax")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    adapter = args.adapter
    if adapter is None:
        recipe = Recipe()
        seconds.update(train_adapter(args.out, replace(recipe)))
        adapter = args.out / "adapter"
    t = time.perf_counter()
    probes = probe(adapter, read_rows())
    seconds["probes"] = time.perf_counter() - t
    t = time.perf_counter()
    held = heldout(adapter, args.out, args.heldout, args.seed, args.eval_seeds, args.syntax)
    seconds["heldout"] = time.perf_counter() - t
    print(f"faithfulness guard on the toy adapter {adapter}: {probes['rows']} rows (the probe set and "
          f"../shared/prompts), {probes['outside_rows']} of them without a toy-world word")
    for mode, m in probes["modes"].items():
        print(f"  {mode:8s} silent content changes {m['silent_changes']:5d}, rejected {m['rejected']:5d}, probe "
              f"words lost {m['probe_words_lost']} of {m['probe_words']}, outside the world unchanged "
              f"{m['outside_unchanged']:.1%} ({m['seconds']:.0f} s)")
    print(f"  held-out toy prompts ({held['prompts']}, seed {held['seed']}): rewritten {held['rewritten']}, "
          f"passed {held['rewritten_passed']}; oracle-exact rewrites {held['correct']}, let through "
          f"{held['correct_passed']} ({held['correct_unseen']} of them rewrite a word no training prompt says, "
          f"let through {held['correct_unseen_passed']})")
    print(f"    woven with A1111 syntax: {held['woven']}, fallbacks {held['woven_fallbacks']} "
          f"({held['woven_fallbacks'] / max(1, held['woven']):.1%}; target <= 5%), oracle-exact {held['woven_correct']}")
    for mode, g in held["gap"].items():
        f, (lo, hi) = g["gap_recovered"], g["gap_recovered_ci95"]
        print(f"    guard {mode:6s}: gap recovered {f:.2f} [{lo:.2f}, {hi:.2f}], guard rejections "
              f"{g['guard_rejections']}, words kept {g['words_kept']:.1%}")
    print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    result = {"probes": probes, "heldout": held, "seconds": seconds, "adapter": str(adapter)}
    (args.out / "faithfulness.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    s = probes["modes"]["strict"]
    print(f"silent changes (strict): {s['silent_changes']} of {probes['rows']} rows")
    return result


if __name__ == "__main__":
    main()
