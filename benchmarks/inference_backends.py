"""Inference backends for trained adapters (#15): fp32 transformers, merged torch int8, and the exported engine.

    uv run python -m benchmarks.inference_backends [--prompts 1000] [--parts speed bound agreement migrate isa]
        [--tokenizer t5|tiny-t5]

speed      Rewriters of flan-t5-base's and flan-t5-small's shapes (random weights: the same compute as trained
           ones; the vocabulary padded to flan-t5's 32,128) with flan-t5's own tokenizer (`--tokenizer t5`;
           `tiny-t5` cuts prompts into 27% more tokens) carry an identity LoRA, exported with
           `sd-bridge export` as ctranslate2 int8 and fp32 and as torch int8. Each backend generates for the same
           `--prompts` real prompts (../shared/prompts, a seeded sample, with the rewrite prefix), greedy, 48 new
           tokens at batch 32 as the issue measured, each batch also capped at `bridge.models.rewriter.BATCH_TOKENS`
           padded tokens as sd-bridge generates: random weights never emit EOS, so every prompt runs to the
           limit. Each backend runs in its own process: prompts/s, the ratio to fp32 transformers, peak RSS.
           On a CPU with AVX-512, the int8 export runs again on ctranslate2's own choice of kernels (AVX2),
           to show what `bridge.models.engine` asking for AVX-512 gains.
           With a GPU, fp16 numbers too.
bound      The base shape (`--migrate-shape`) with one new token, fp32 transformers and the int8 export: what
           the encoder alone costs each, and so the most the engine could gain if its decoding cost nothing.
agreement  A toy-world adapter trained with the reduced learning recipe (benchmarks.toyworld_learning), exported
           int8 and fp32; greedy translations of the 500 held-out toy prompts by the adapter and by each export.
migrate    A 10,000-row library built from ../shared/prompts migrated with the base-shaped int8 export: the time
           predicted from the engine's translate rate measured here (rows it must generate ÷ that rate, plus the
           load and the per-row cost of a syntax-only migrate of the same library) against the time it took;
           then the same library again, from the translation cache. Rewrites stop at 48 new tokens here too
           (`_cap_rewrites`: random weights never end a rewrite themselves).
isa        (not by default, 14 min) The base-shaped int8 export on the AVX-512 kernels `bridge.models.engine` asks
           ctranslate2 for, against its own AVX2 choice, in alternating processes (`--repeats` pairs).

The last line reads `speedup vs fp32: X.X (flan-t5-base shape, N prompts)`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.results import recorded
from bridge.models.rewriter import BATCH_TOKENS
from bridge.models.tiny import default_prompts_dir

SHAPES = {  # flan-t5's configs (d_model, d_ff, d_kv, layers, heads); vocab 32128, gated-gelu, untied head
    "flan-t5-base": (768, 2048, 64, 12, 12),
    "flan-t5-small": (512, 1024, 64, 8, 6),
}
VOCAB = 32128
NEW_TOKENS, BATCH = 48, 32


def real_prompts(n: int | None, seed: int = 0) -> list[str]:
    """Distinct real prompts from ../shared/prompts (plain and A1111), in a seeded order; the first `n`."""
    seen: dict[str, None] = {}
    for name in ("plain.jsonl", "a1111.jsonl"):
        with (default_prompts_dir() / name).open(encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["prompt"].strip()
                if text:
                    seen.setdefault(text, None)
    prompts = list(seen)
    random.Random(seed).shuffle(prompts)
    return prompts[:n] if n else prompts


T5_TOKENIZER = Path(__file__).parent / "data" / "t5-tokenizer.json.xz"
TOKENIZERS = ("t5", "tiny-t5")


def rewriter_tokenizer(name: str, vocab: int | None = VOCAB):
    """"t5": flan-t5's own tokenizer (T5's SentencePiece vocabulary, 32,000 pieces and 100 sentinels;
    benchmarks/data/README.md says where the file comes from), which decides how many tokens a real prompt costs
    the encoder. "tiny-t5": tiny-t5's 2,000 pieces, grown to `vocab` pieces when given; it cuts the same prompts
    into about 27% more tokens (93.7 against 73.9 a prompt on the benchmark's 1,000, the prefix included)."""
    import lzma

    from transformers import T5TokenizerFast

    from bridge.models import presets
    from bridge.models.loading import load_rewriter

    if name == "t5":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tokenizer.json"
            path.write_bytes(lzma.decompress(T5_TOKENIZER.read_bytes()))
            return T5TokenizerFast(tokenizer_file=str(path))
    if name != "tiny-t5":
        raise ValueError(f"unknown tokenizer {name!r} (known: {', '.join(TOKENIZERS)})")
    _, tok = load_rewriter(presets.rewriter("tiny-t5"))
    if vocab is not None:
        tok.add_tokens([f"<v{i}>" for i in range(vocab - len(tok))])
    return tok


def mean_tokens(tokenizer: str, prompts: list[str]) -> float:
    """Tokens a prompt costs the encoder with `tokenizer`, the rewrite prefix and the EOS included, as generate
    tokenizes it (at most 512)."""
    from bridge.models.rewriter import PREFIX

    tok = rewriter_tokenizer(tokenizer)
    return statistics.mean(len(ids) for ids in tok([PREFIX + p for p in prompts], truncation=True,
                                                   max_length=512).input_ids)


def shaped_adapter(root: Path, shape: str, max_new_tokens: int = NEW_TOKENS, vocab: int | None = VOCAB,
                   tokenizer: str = "t5") -> Path:
    """A random rewriter of `shape` (its vocabulary `vocab` rows, as flan-t5's 32,128, else the tokenizer's
    size) with `tokenizer`, and an identity LoRA on it saved the way training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    from bridge.models.rewriter import AdapterMeta

    tok = rewriter_tokenizer(tokenizer, vocab)
    d_model, d_ff, d_kv, layers, heads = SHAPES[shape]
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=vocab or len(tok), d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_layers=layers,
        num_decoder_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    base = root / f"{shape}-base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    adapter = root / f"{shape}-adapter"
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q", "v"],
                                     task_type="SEQ_2_SEQ_LM")).save_pretrained(adapter)
    AdapterMeta(str(base), "local", "sd15", "sd2-base", max_new_tokens=max_new_tokens).save(adapter)
    return adapter


def export(adapter: Path, out: Path, backend: str, quantize: str) -> Path:
    from bridge.commands.export import ExportConfig, run_export

    run_export(ExportConfig(adapter=adapter, out=out, backend=backend, quantize=quantize, overwrite=True),
               log=lambda *_: None)
    return out


def existing_adapter(root: Path, shape: str, tokenizer: str) -> Path:
    """The shape's adapter: the one an earlier part wrote in this run, else a new one."""
    adapter = root / f"{shape}-adapter"
    return adapter if adapter.is_dir() else shaped_adapter(root, shape, tokenizer=tokenizer)


def int8_export(root: Path, shape: str, tokenizer: str) -> Path:
    """The shape's ctranslate2 int8 export: the one `speed` wrote in this run, else a new one."""
    engine_dir = root / f"{shape}-ct2"
    if engine_dir.is_dir():
        return engine_dir
    return export(existing_adapter(root, shape, tokenizer), engine_dir, "ctranslate2", "int8")


def _measure(directory: str, prompts: list[str], device: str, dtype: str = "auto", env: dict | None = None,
             new_tokens: int = NEW_TOKENS) -> dict:
    """In a fresh process (with `env` set first): load, warm up, generate `new_tokens` for every prompt;
    prompts/s, peak RSS."""
    os.environ.update(env or {})
    from bridge.models.rewriter import PREFIX, generate
    from bridge.translator import Translator

    started = time.perf_counter()
    tr = Translator.from_pretrained(directory, device=device, dtype=dtype, cache=None).load()
    load = time.perf_counter() - started
    generate(tr.model, tr.tokenizer, prompts[:4], PREFIX, max_new_tokens=NEW_TOKENS, batch_size=4,
             size_from_input=False)
    started = time.perf_counter()
    generate(tr.model, tr.tokenizer, prompts, PREFIX, max_new_tokens=new_tokens, batch_size=BATCH,
             size_from_input=False)
    seconds = time.perf_counter() - started
    return {"load_s": load, "seconds": seconds, "prompts_per_s": len(prompts) / seconds,
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across exec, so a spawned
    worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process(fn, *args):
    """`fn(*args)` in a fresh interpreter, so each backend's peak memory and warm-up are its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def speed(root: Path, prompts: list[str], shapes: list[str], tokenizer: str) -> dict:
    import torch

    from bridge.models.engine import ISA_VARIABLE, planned_isa

    gpu = torch.cuda.is_available()
    isa = planned_isa()  # (agreement, run first, may have set the variable in this process already: the same)
    avx512 = isa == "AVX512"
    tokens = mean_tokens(tokenizer, prompts)  # the same for every shape
    out = {}
    for shape in shapes:
        adapter = shaped_adapter(root, shape, tokenizer=tokenizer)
        runs = {"fp32 transformers": (adapter, "cpu", "float32"),
                "torch int8 (merged)": (export(adapter, root / f"{shape}-torch", "torch", "int8"), "cpu", "auto"),
                "ctranslate2 fp32": (export(adapter, root / f"{shape}-ct2-fp32", "ctranslate2", "none"), "cpu", "auto"),
                "ctranslate2 int8": (export(adapter, root / f"{shape}-ct2", "ctranslate2", "int8"), "cpu", "auto")}
        if avx512:  # the same export on ctranslate2's own kernel choice: what asking for AVX-512 gained
            runs["ctranslate2 int8 (AVX2)"] = runs["ctranslate2 int8"] + ({ISA_VARIABLE: "AVX2"},)
        if gpu:
            runs["fp16 transformers (GPU)"] = (adapter, "cuda", "float16")
            runs["ctranslate2 fp16 (GPU)"] = (export(adapter, root / f"{shape}-ct2-fp16", "ctranslate2", "fp16"),
                                              "cuda", "auto")
        rows = {name: in_process(_measure, str(d), prompts, device, dtype, *env)
                for name, (d, device, dtype, *env) in runs.items()}
        base = rows["fp32 transformers"]["prompts_per_s"]
        print(f"{shape} shape, {tokenizer} tokenizer ({tokens:.1f} tokens a prompt), "
              f"{len(prompts)} prompts, greedy, {NEW_TOKENS} new tokens, "
              f"batch {BATCH} (at most {BATCH_TOKENS} padded tokens), ctranslate2 CPU kernels {isa}:")
        for name, r in rows.items():
            r["ratio"] = r["prompts_per_s"] / base
            print(f"  {name:24s} {r['prompts_per_s']:7.2f} prompts/s  {r['ratio']:5.1f}x fp32  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB  load {r['load_s']:.1f} s", flush=True)
        out[shape] = rows
    return out


def bound(root: Path, prompts: list[str], shape: str, tokenizer: str, full: dict | None) -> dict:
    """What is left to gain once decoding is fast: the same prompts with one new token (the encoder and one
    decoder step) on fp32 transformers and on the int8 export. Even if the engine's other 47 steps cost nothing,
    it would run at most its own one-token rate ÷ fp32's full rate: the ceiling. `full`: speed's rows for
    this shape, when it ran in this run (else fp32's full rate is measured here)."""
    adapter = existing_adapter(root, shape, tokenizer)
    engine_dir = int8_export(root, shape, tokenizer)
    fp32_full = (full or {}).get("fp32 transformers") or in_process(_measure, str(adapter), prompts, "cpu", "float32")
    one = {"fp32 transformers": in_process(_measure, str(adapter), prompts, "cpu", "float32", None, 1),
           "ctranslate2 int8": in_process(_measure, str(engine_dir), prompts, "cpu", "auto", None, 1)}
    ceiling = one["ctranslate2 int8"]["prompts_per_s"] / fp32_full["prompts_per_s"]
    encoder_ratio = one["ctranslate2 int8"]["prompts_per_s"] / one["fp32 transformers"]["prompts_per_s"]
    print(f"{shape} shape, {tokenizer} tokenizer, {len(prompts)} prompts, 1 new token (the encoder and one decoder "
          f"step), batch {BATCH}:")
    for name, r in one.items():
        print(f"  {name:24s} {r['prompts_per_s']:7.2f} prompts/s")
    share = fp32_full["prompts_per_s"] / one["fp32 transformers"]["prompts_per_s"]
    print(f"  one token: int8 {encoder_ratio:.1f}x fp32; fp32 spends {share:.0%} of its full time there;"
          f" ceiling if the engine's other {NEW_TOKENS - 1} steps cost nothing: "
          f"{ceiling:.1f}x fp32 ({fp32_full['prompts_per_s']:.2f} prompts/s with {NEW_TOKENS} tokens)")
    return {"one_token": one, "fp32_full": fp32_full["prompts_per_s"], "one_token_ratio": encoder_ratio,
            "fp32_one_token_share": share, "ceiling": ceiling}


def agreement(root: Path) -> dict:
    from benchmarks.toyworld_learning import PROMPTS, REDUCED, train_adapter
    from bridge.commands.export import agreement as compare
    from bridge.models.engine import start_isa

    started = time.perf_counter()
    train_adapter(root / "toy", REDUCED)
    trained = time.perf_counter() - started
    adapter = root / "toy" / "adapter"
    prompts = [json.loads(line)["prompt"] for line in (PROMPTS / "heldout.jsonl").open(encoding="utf-8")]
    out = {}
    print(f"greedy agreement, toy-world adapter (reduced recipe, trained in {trained:.0f} s), "
          f"{len(prompts)} held-out prompts, ctranslate2 CPU kernels {start_isa()}:")
    for quantize in ("int8", "none"):
        result = compare(adapter, export(adapter, root / f"toy-{quantize}", "ctranslate2", quantize), prompts)
        out[quantize] = {k: result[k] for k in ("prompts", "same", "rate")} | {"differing": result["differing"]}
        print(f"  ctranslate2 {quantize:5s} {result['same']}/{result['prompts']} ({100 * result['rate']:.1f}%)")
        for d in result["differing"][:5]:
            print(f"    {d['prompt']!r}: adapter {d['adapter']!r}, export {d['export']!r}")
    gaps = closest_calls(adapter, prompts)
    differ = sorted(gaps[d["prompt"]] for d in out["int8"]["differing"])
    print(f"  the adapter's closest call per prompt (fp32, smallest gap between its two best next tokens over "
          f"the greedy rewrite): median {statistics.median(gaps.values()):.2f} logits over all {len(prompts)}; "
          f"{', '.join(f'{g:.3f}' for g in differ)} for the ones int8 changes")
    out["closest_call"] = {"median": statistics.median(gaps.values()), "int8_differing": differ}
    return out


def closest_calls(adapter: Path, prompts: list[str]) -> dict[str, float]:
    """Per prompt, the smallest logit gap between the best and second-best next token along the adapter's
    greedy rewrite: how close a tie int8 rounding would have to break. (Toy prompts are one text leaf each, so
    the model input is the prefix and the prompt, as the translator sends it.)"""
    import torch

    from bridge.models.rewriter import PREFIX
    from bridge.translator import load_adapter

    model, tok, meta, _ = load_adapter(adapter, dtype="float32")
    out = {}
    with torch.inference_mode():
        for p in prompts:
            gen = model.generate(**tok([PREFIX + p], return_tensors="pt"), max_new_tokens=meta.max_new_tokens,
                                 do_sample=False, num_beams=1, output_scores=True, return_dict_in_generate=True)
            top2 = [s[0].topk(2).values for s in gen.scores]
            out[p] = min(float(t[0] - t[1]) for t in top2)
    return out


def library(path: Path, rows: int = 10_000, seed: int = 1) -> int:
    """A prompt library of `rows` rows: every real prompt once, then repeats drawn at random (libraries repeat
    themselves); returns its distinct prompts."""
    prompts = real_prompts(None, seed)
    rng = random.Random(seed)
    chosen = (prompts + [rng.choice(prompts) for _ in range(max(0, rows - len(prompts)))])[:rows]
    rng.shuffle(chosen)
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in chosen), encoding="utf-8")
    return len(set(chosen))


def _cap_rewrites() -> None:
    """Every rewrite stops at NEW_TOKENS new tokens, as in the speed part. The translator's own limit is twice
    the longest input of the batch plus 8, which a trained rewriter never reaches (it ends where its rewrite
    ends) and random weights always do: uncapped, a batch holding one long A1111 prompt decodes hundreds of
    steps for all 32 rows, and the cost of a library follows its longest prompts, not its size."""
    import functools

    import bridge.models.rewriter as rw

    if not getattr(rw.rewrite_prompts, "capped", False):
        capped = functools.partial(rw.rewrite_prompts, max_new_tokens=NEW_TOKENS, size_from_input=False)
        capped.capped = True
        rw.rewrite_prompts = capped


def _translate_rate(directory: str, prompts: list[str]) -> dict:
    """In a fresh process: `Translator.translate` over `prompts` as migrate calls it (chunks of its chunk_rows,
    each deduplicated, length-sorted and batched), no cache."""
    from bridge.io.migrate import MigrateConfig
    from bridge.translator import Translator

    _cap_rewrites()
    chunk = MigrateConfig.__dataclass_fields__["chunk_rows"].default
    started = time.perf_counter()
    tr = Translator.from_pretrained(directory, cache=None).load()
    load = time.perf_counter() - started
    started = time.perf_counter()
    for lo in range(0, len(prompts), chunk):
        tr.translate(prompts[lo : lo + chunk])
    return {"load_s": load, "prompts_per_s": len(prompts) / (time.perf_counter() - started)}


def _migrate(library_path: str, out: str, adapter: str | None, cache: str) -> float:
    from bridge.commands.migrate import MigrateConfig, run_migrate

    _cap_rewrites()
    started = time.perf_counter()
    run_migrate(MigrateConfig(input=Path(library_path), out=Path(out), adapter=Path(adapter) if adapter else None,
                              translation_cache=cache, progress=False), log=lambda *_: None)
    return time.perf_counter() - started


def migrate(root: Path, prompts: list[str], rows: int, shape: str, tokenizer: str) -> dict:
    engine_dir = int8_export(root, shape, tokenizer)
    path = root / "library.jsonl"
    distinct = library(path, rows)
    rate = in_process(_translate_rate, str(engine_dir), prompts)
    syntax = in_process(_migrate, str(path), str(root / "syntax.jsonl"), None, "off")
    predicted = rate["load_s"] + syntax + distinct / rate["prompts_per_s"]
    cache = str(root / "translations.sqlite")
    first = in_process(_migrate, str(path), str(root / "first.jsonl"), str(engine_dir), cache)
    second = in_process(_migrate, str(path), str(root / "second.jsonl"), str(engine_dir), cache)
    same = (root / "first.jsonl").read_bytes() == (root / "second.jsonl").read_bytes()
    print(f"migrate, {rows:,} rows ({distinct} distinct prompts), {shape}-shaped int8 export:")
    print(f"  translate rate {rate['prompts_per_s']:.2f} prompts/s, load {rate['load_s']:.1f} s, syntax-only "
          f"migrate {syntax:.1f} s -> predicted {predicted:.0f} s")
    print(f"  first run {first:.0f} s ({first / predicted:.2f}x the prediction); second run {second:.1f} s "
          f"({first / second:.0f}x the first run's rate, from the translation cache); outputs identical: {same}")
    return {"distinct": distinct, "rate": rate, "syntax_s": syntax, "predicted_s": predicted, "first_s": first,
            "second_s": second, "cache_ratio": first / second, "identical": same}


def isa(root: Path, prompts: list[str], shape: str, repeats: int, tokenizer: str) -> dict:
    """The int8 export on the AVX-512 kernels sd-bridge asks for against ctranslate2's own AVX2 choice, in
    alternating fresh processes, `repeats` pairs: whole runs of this benchmark on the 2-core machine differ by
    about 10%, more than the two kernels do, so one pair proves little."""
    from bridge.models.engine import ISA_VARIABLE, cpu_flags, isa_to_force

    if isa_to_force(cpu_flags(), {}) != "AVX512":
        print("isa: this CPU lacks AVX-512; nothing to compare")
        return {}
    engine_dir = int8_export(root, shape, tokenizer)
    runs: dict[str, list[float]] = {"AVX512": [], "AVX2": []}
    for _ in range(repeats):
        for name, rates in runs.items():
            rates.append(in_process(_measure, str(engine_dir), prompts, "cpu", "auto",
                                    {ISA_VARIABLE: name})["prompts_per_s"])
    ratios = [a / b for a, b in zip(runs["AVX512"], runs["AVX2"])]
    print(f"ctranslate2 int8, {shape} shape, {len(prompts)} prompts, {repeats} alternating pairs of processes:")
    for name, rates in runs.items():
        print(f"  {name:6s} " + " ".join(f"{r:6.2f}" for r in rates) + f"  prompts/s (mean {statistics.mean(rates):.2f})")
    print("  AVX512 / AVX2 per pair: " + " ".join(f"{r:.3f}" for r in ratios)
          + f" (mean {statistics.mean(ratios):.3f})")
    return {"prompts_per_s": runs, "ratios": ratios}


@recorded("inference_backends")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--parts", nargs="+", choices=["speed", "bound", "agreement", "migrate", "isa"],
                    default=["speed", "bound", "agreement", "migrate"])
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="t5",
                    help="the shaped rewriters' tokenizer: flan-t5's own (t5) or tiny-t5's 2,000 pieces")
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs of processes the isa part runs")
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="shapes speed measures")
    ap.add_argument("--migrate-shape", choices=list(SHAPES), default="flan-t5-base", help="the rewriter migrate uses")
    ap.add_argument("--library-rows", type=int, default=10_000, help="rows of the library migrate runs on")
    args = ap.parse_args(argv)
    prompts = real_prompts(args.prompts)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "agreement" in args.parts:
            result["agreement"] = agreement(root)
        if "speed" in args.parts:
            result["speed"] = speed(root, prompts, args.shapes, args.tokenizer)
        if "bound" in args.parts:
            full = result.get("speed", {}).get(args.migrate_shape)
            result["bound"] = bound(root, prompts, args.migrate_shape, args.tokenizer, full)
        if "migrate" in args.parts:
            result["migrate"] = migrate(root, prompts, args.library_rows, args.migrate_shape, args.tokenizer)
        if "isa" in args.parts:
            result["isa"] = isa(root, prompts, args.migrate_shape, args.repeats, args.tokenizer)
    if "speed" in result and "flan-t5-base" in result["speed"]:
        ratio = result["speed"]["flan-t5-base"]["ctranslate2 int8"]["ratio"]
        print(f"speedup vs fp32: {ratio:.1f} (flan-t5-base shape, {len(prompts)} prompts)")
    return result


if __name__ == "__main__":
    main()
