"""Inference backends for trained adapters (#15, #44): fp32 transformers, torch int8 (copydecode) and ctranslate2.

    uv run python -m benchmarks.inference_backends [--prompts 1000] [--parts speed bound identity agreement
        migrate isa] [--weights copying|random] [--draft-tokens 8] [--tokenizer t5|tiny-t5]

speed      Rewriters of flan-t5-base's and flan-t5-small's shapes with flan-t5's own tokenizer (`--tokenizer t5`;
           `tiny-t5` cuts prompts into 27% more tokens) and the vocabulary padded to flan-t5's 32,128 carry an
           identity LoRA, exported with `sd-bridge export` as ctranslate2 int8 and fp32 and as torch int8. Their
           weights (`--weights`) copy the source as a translation mostly does (`copying_model`, the default), or
           are random: then every rewrite repeats one token to the limit and nothing can be drafted. Each backend
           generates for the same `--prompts` real prompts (../shared/prompts, a seeded sample, with the rewrite
           prefix), greedy, at most 48 new tokens at batch 32, each batch also capped at
           `bridge.models.rewriter.BATCH_TOKENS` padded tokens as sd-bridge generates. The torch int8 export runs
           twice: drafting `--draft-tokens` a pass, and one token a pass. Each run in its own process:
           prompts/s, the ratio to fp32 transformers, peak RSS. On a CPU with AVX-512, the ctranslate2 int8
           export runs again on ctranslate2's own choice of kernels (AVX2). With a GPU, fp16 numbers too.
bound      The base shape (`--migrate-shape`) with one new token on fp32 transformers and each int8 engine: the
           encoder and one decoder step. An engine's ceiling is that rate over fp32's full rate (what it would
           reach if its other steps cost nothing), and its full rate over its one-token rate is the share of
           that ceiling it reaches. Beside it, the compute bound on that share (`multiply_adds`).
identity   The base-shaped torch int8 export's greedy rewrites, drafting and one token a pass, id for id.
agreement  A toy-world adapter trained with the reduced learning recipe (benchmarks.toyworld_learning), exported
           ctranslate2 int8 and fp32 and torch int8; greedy translations of the 500 held-out toy prompts by the
           adapter and by each export, and the torch export's identity, drafting and not.
migrate    A 10,000-row library built from ../shared/prompts migrated with the base-shaped int8 export: the time
           predicted from the engine's translate rate measured here (rows it must generate / that rate, plus the
           load and the per-row cost of a syntax-only migrate of the same library) against the time it took;
           then the same library again, from the translation cache. Rewrites stop at 48 new tokens here too
           (`_cap_rewrites`: random weights never end a rewrite themselves).
isa        (not by default, 14 min) The base-shaped int8 export on the AVX-512 kernels `bridge.models.engine` asks
           ctranslate2 for, against its own AVX2 choice, in alternating processes (`--repeats` pairs).

The last line reads `speedup vs fp32: X.X, share of ceiling: S, compute bound B (ENGINE, flan-t5-base shape,
...)`, for the fastest int8 engine. B is the share a decoder would reach if it computed every generated token
as efficiently per multiply-add as the ceiling's run computes the encoder (`multiply_adds`). The results file
records the CPU's instruction sets (the ceiling depends on them).
"""

from __future__ import annotations

import argparse
import functools
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
from bridge.models.copydecode import DRAFT_TOKENS
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
                   tokenizer: str = "t5", weights: str = "random") -> Path:
    """A rewriter of `shape` (its vocabulary `vocab` rows, as flan-t5's 32,128, else the tokenizer's size) with
    `tokenizer`, its weights random or copying (`copying_model`), and an identity LoRA on it saved the way
    training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    from bridge.models.rewriter import AdapterMeta

    tok = rewriter_tokenizer(tokenizer, vocab)
    d_model, d_ff, d_kv, layers, heads = SHAPES[shape]
    torch.manual_seed(0)
    if weights == "copying":
        model = copying_model(SHAPES[shape], tok)
    else:
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


WEIGHTS = ("copying", "random")


def copying_model(dims: tuple[int, int, int, int, int], tokenizer, noise: float = 1e-3, seed: int = 0):
    """A T5 rewriter of `dims` (d_model, d_ff, d_kv, layers, heads) that copies its source, built rather than
    trained: what a translation does with most of a prompt, which random weights never do (they repeat one
    token to the limit, and a draft taken from the source would never be accepted).

    Every weight is the random initialisation times `noise` (the compute is a real model's), except an
    induction circuit (the same mechanism as a trained model's copying heads, Olsson et al. 2022):
    - embeddings put a random code of each token in the first third of the model width (tied output head);
    - the encoder's first layer writes, at each position, the code of the token before it and of the one
      before that (two heads each, attending by the relative-position bias alone) into the other two thirds;
    - the decoder's first layer moves its input token's code out of the first third and writes it, and the
      input before it, where the encoder keeps those two; its cross-attention then finds the source position
      whose two preceding tokens match, and writes the code of the token there into the first third, which the
      output head reads. The decoder start token is coded as the end of the task prefix.
    So it copies its source and, where the same two tokens occur twice ("masterpiece, best" ... ", best"),
    it may jump and repeat, which a drafting decoder has to survive."""
    import math

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from bridge.models.rewriter import PREFIX

    d_model, d_ff, d_kv, layers, heads = dims
    per = d_model // (3 * d_kv)  # heads that carry one code
    span = per * d_kv  # encoder width: [token | token before | two before]; decoder: [output | input | input before]
    if not per or 2 * per > heads:
        raise ValueError(f"a copying model needs d_model >= 3 * d_kv and 2 * d_model / (3 * d_kv) heads: {dims}")
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=vocab, d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_layers=layers, num_decoder_layers=layers,
        num_heads=heads, feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1))
    A, B, C = slice(0, span), slice(span, 2 * span), slice(2 * span, 3 * span)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" not in name:
                p.mul_(noise)
        codes = torch.randn(vocab, span, generator=g)
        codes = codes / codes.norm(dim=1, keepdim=True) * math.sqrt(span)
        last = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(PREFIX.rstrip()))[-2:]  # "2", ":"
        codes[model.config.decoder_start_token_id] = (codes[last[0]] + codes[last[1]]) / math.sqrt(2)
        model.shared.weight.zero_()
        model.shared.weight[:, A] = codes
        eye, norm = torch.eye(span), math.sqrt(d_model / span)  # norm: what the first RMS norm scales a code by
        first, second = slice(0, per * d_kv), slice(per * d_kv, 2 * per * d_kv)

        def look_back(att, buckets):  # heads attending `buckets` positions back, by the bias alone, reading codes
            att.relative_attention_bias.weight[:, : 2 * per] = 0
            att.relative_attention_bias.weight[buckets[0], :per] = 30.0
            att.relative_attention_bias.weight[buckets[1], per : 2 * per] = 30.0
            for w in (att.q, att.k, att.v):
                w.weight[: 2 * per * d_kv] = 0
            att.v.weight[first, A] = eye
            att.v.weight[second, A] = eye
            att.o.weight[:, : 2 * per * d_kv] = 0

        att = model.encoder.block[0].layer[0].SelfAttention
        look_back(att, (1, 2))  # bidirectional buckets of relative positions -1 and -2
        att.o.weight[B, first] = eye / norm
        att.o.weight[C, second] = eye / norm
        att = model.decoder.block[0].layer[0].SelfAttention
        look_back(att, (0, 1))  # causal buckets of relative positions 0 and -1
        att.o.weight[A, first] = -eye / norm
        att.o.weight[B, first] = eye / norm
        att.o.weight[C, second] = eye / norm
        x = model.decoder.block[0].layer[1].EncDecAttention
        for w in (x.q, x.k, x.v):
            w.weight[: 2 * per * d_kv] = 0
        x.o.weight[:, : 2 * per * d_kv] = 0
        half = d_kv // 2
        for h in range(2 * per):  # head h: chunk h of (input, input before) against (token before, two before)
            mine = slice(h * half, (h + 1) * half)
            q1, q2 = slice(h * d_kv, h * d_kv + half), slice(h * d_kv + half, (h + 1) * d_kv)
            for rows, cols in ((q1, span), (q2, 2 * span)):
                x.q.weight[rows, cols + h * half : cols + (h + 1) * half] = 3.0 * torch.eye(half)  # sharp match
                x.k.weight[rows, cols + h * half : cols + (h + 1) * half] = torch.eye(half)
            x.v.weight[q1, mine] = torch.eye(half)
            x.o.weight[mine, q1] = torch.eye(half)
        model.lm_head.weight.copy_(model.shared.weight)
    return model.eval()


def export(adapter: Path, out: Path, backend: str, quantize: str) -> Path:
    from bridge.commands.export import ExportConfig, run_export

    run_export(ExportConfig(adapter=adapter, out=out, backend=backend, quantize=quantize, overwrite=True),
               log=lambda *_: None)
    return out


def existing_adapter(root: Path, shape: str, tokenizer: str, weights: str) -> Path:
    """The shape's adapter: the one an earlier part wrote in this run, else a new one."""
    adapter = root / f"{shape}-adapter"
    return adapter if adapter.is_dir() else shaped_adapter(root, shape, tokenizer=tokenizer, weights=weights)


def int8_export(root: Path, shape: str, tokenizer: str, weights: str, backend: str = "ctranslate2") -> Path:
    """The shape's int8 export for `backend`: the one `speed` wrote in this run, else a new one."""
    engine_dir = root / f"{shape}-{'ct2' if backend == 'ctranslate2' else 'torch'}"
    if engine_dir.is_dir():
        return engine_dir
    return export(existing_adapter(root, shape, tokenizer, weights), engine_dir, backend, "int8")


def _measure(directory: str, prompts: list[str], device: str = "cpu", dtype: str = "auto", env: dict | None = None,
             new_tokens: int = NEW_TOKENS, draft: int | None = None, ids: bool = False) -> dict:
    """In a fresh process (with `env` set first): load, warm up, generate `new_tokens` for every prompt;
    prompts/s, peak RSS, the tokens generated (and with `ids`, the generated ids). `draft`: the tokens a
    torch int8 export (bridge.models.copydecode) drafts per pass, 0 for one token a pass."""
    os.environ.update(env or {})
    from bridge.models.rewriter import PREFIX, generate
    from bridge.translator import Translator

    started = time.perf_counter()
    tr = Translator.from_pretrained(directory, device=device, dtype=dtype, cache=None).load()
    load = time.perf_counter() - started
    if draft is not None:
        tr.model.draft_tokens = draft
    generate(tr.model, tr.tokenizer, prompts[:4], PREFIX, max_new_tokens=NEW_TOKENS, batch_size=4,
             size_from_input=False)
    started = time.perf_counter()
    rows = generate(tr.model, tr.tokenizer, prompts, PREFIX, max_new_tokens=new_tokens, batch_size=BATCH,
                    size_from_input=False, return_ids=True)
    seconds = time.perf_counter() - started
    out = {"load_s": load, "seconds": seconds, "prompts_per_s": len(prompts) / seconds,
           "peak_rss_mib": peak_rss_mib(), "tokens": sum(len(r[0][1]) for r in rows)}
    return out | ({"ids": [r[0][1] for r in rows]} if ids else {})


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


def speed(root: Path, prompts: list[str], shapes: list[str], tokenizer: str, weights: str, draft: int) -> dict:
    import torch

    from bridge.models.engine import ISA_VARIABLE, planned_isa

    gpu = torch.cuda.is_available()
    isa = planned_isa()  # (agreement, run first, may have set the variable in this process already: the same)
    avx512 = isa == "AVX512"
    tokens = mean_tokens(tokenizer, prompts)  # the same for every shape
    out = {}
    for shape in shapes:
        adapter = shaped_adapter(root, shape, tokenizer=tokenizer, weights=weights)
        torch_int8 = export(adapter, root / f"{shape}-torch", "torch", "int8")
        runs = {"fp32 transformers": dict(directory=adapter, dtype="float32"),
                "torch int8 (copydecode)": dict(directory=torch_int8, draft=draft),
                "torch int8 (no draft)": dict(directory=torch_int8, draft=0),
                "ctranslate2 fp32": dict(directory=export(adapter, root / f"{shape}-ct2-fp32", "ctranslate2", "none")),
                "ctranslate2 int8": dict(directory=export(adapter, root / f"{shape}-ct2", "ctranslate2", "int8"))}
        if avx512:  # the same export on ctranslate2's own kernel choice: what asking for AVX-512 gained
            runs["ctranslate2 int8 (AVX2)"] = runs["ctranslate2 int8"] | {"env": {ISA_VARIABLE: "AVX2"}}
        if gpu:
            runs["fp16 transformers (GPU)"] = dict(directory=adapter, device="cuda", dtype="float16")
            runs["ctranslate2 fp16 (GPU)"] = dict(
                directory=export(adapter, root / f"{shape}-ct2-fp16", "ctranslate2", "fp16"), device="cuda")
        rows = {name: in_process(functools.partial(_measure, str(kw.pop("directory")), prompts, **kw))
                for name, kw in runs.items()}
        base = rows["fp32 transformers"]["prompts_per_s"]
        print(f"{shape} shape ({weights} weights), {tokenizer} tokenizer ({tokens:.1f} tokens a prompt), "
              f"{len(prompts)} prompts, greedy, at most {NEW_TOKENS} new tokens "
              f"({rows['fp32 transformers']['tokens'] / len(prompts):.1f} generated a prompt), "
              f"batch {BATCH} (at most {BATCH_TOKENS} padded tokens), ctranslate2 CPU kernels {isa}:")
        for name, r in rows.items():
            r["ratio"] = r["prompts_per_s"] / base
            print(f"  {name:24s} {r['prompts_per_s']:7.2f} prompts/s  {r['ratio']:5.1f}x fp32  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB  load {r['load_s']:.1f} s", flush=True)
        out[shape] = rows
    return out


INT8 = {"ctranslate2 int8": "ctranslate2", "torch int8 (copydecode)": "torch"}


def multiply_adds(shape: str, source: float, generated: float) -> dict:
    """Multiply-adds per prompt (in billions, `_g`) of a T5 of `shape` (gated feed-forward, untied head of VOCAB
    rows) that reads `source` tokens and writes `generated`: the encoder (with every decoder layer's
    cross-attention keys and values, computed once per source token), one decoder step, and every generated
    token's step. The ceiling's run does the first two; a greedy decoder that is byte-identical to one token a
    pass must also compute every generated token's logits, whatever it drafts, so its share of the ceiling is at
    most (encoder + one step) / (encoder + all steps) unless it runs decoder tokens more efficiently than the
    ceiling's run runs the encoder. Attention is counted at the mean lengths (its products are a few percent of
    the total here)."""
    d, f, d_kv, layers, heads = SHAPES[shape]
    inner = heads * d_kv
    ff = d * 2 * f + f * d  # wi_0 and wi_1, then wo
    encoder = layers * (3 * d * inner + inner * d + ff + 2 * source * inner + 2 * d * inner)  # last: cross k, v

    def step(position: float) -> float:  # self-attention over `position` tokens, cross-attention over the source
        return layers * (3 * d * inner + 3 * inner * d + ff + 2 * position * inner + 2 * source * inner) + d * VOCAB

    one = source * encoder + step(1)
    # the sum of step(t) for t = 1..generated: linear in t, so generated steps at the mean position
    full = source * encoder + generated * step((generated + 1) / 2)
    return {"source_tokens": source, "generated_tokens": generated, "one_token_g": one / 1e9,
            "full_g": full / 1e9, "share_bound": one / full}


def bound(root: Path, prompts: list[str], shape: str, tokenizer: str, weights: str, full: dict | None) -> dict:
    """What is left to gain once decoding is fast: the same prompts with one new token (the encoder and one
    decoder step) on fp32 transformers and on each int8 engine. Even if an engine's other steps cost nothing,
    it would run at most its own one-token rate / fp32's full rate: its ceiling, and its full rate over its
    one-token rate is the share of that ceiling it reaches. `full`: speed's rows for this shape, when it ran in
    this run (else the full rates are measured here)."""
    adapter = existing_adapter(root, shape, tokenizer, weights)
    exports = {name: int8_export(root, shape, tokenizer, weights, backend) for name, backend in INT8.items()}
    full = dict(full or {})
    if "fp32 transformers" not in full:
        full["fp32 transformers"] = in_process(functools.partial(_measure, str(adapter), prompts, dtype="float32"))
    for name, directory in exports.items():
        if name not in full:
            full[name] = in_process(functools.partial(_measure, str(directory), prompts))
    one = {"fp32 transformers": in_process(functools.partial(_measure, str(adapter), prompts, dtype="float32",
                                                             new_tokens=1))}
    for name, directory in exports.items():
        one[name] = in_process(functools.partial(_measure, str(directory), prompts, new_tokens=1))
    fp32_full = full["fp32 transformers"]["prompts_per_s"]
    print(f"{shape} shape ({weights} weights), {tokenizer} tokenizer, {len(prompts)} prompts, 1 new token (the "
          f"encoder and one decoder step), batch {BATCH}:")
    engines = {}
    for name, r in one.items():
        print(f"  {name:24s} {r['prompts_per_s']:7.2f} prompts/s")
        if name in exports:
            ceiling = r["prompts_per_s"] / fp32_full
            share = full[name]["prompts_per_s"] / r["prompts_per_s"]
            engines[name] = {"ceiling": ceiling, "speedup": full[name]["prompts_per_s"] / fp32_full, "share": share}
            print(f"    ceiling {ceiling:.1f}x fp32 (if its decoding after the first step cost nothing); its full "
                  f"run reaches {engines[name]['speedup']:.1f}x: {share:.0%} of that ceiling")
    best = max(engines, key=lambda n: engines[n]["speedup"])
    print(f"  fastest int8 engine: {best}; the highest ceiling any engine showed: "
          f"{max(e['ceiling'] for e in engines.values()):.1f}x fp32 ({fp32_full:.2f} prompts/s for fp32)")
    work = multiply_adds(shape, mean_tokens(tokenizer, prompts), full[best]["tokens"] / len(prompts))
    print(f"  multiply-adds per prompt ({work['source_tokens']:.1f} source tokens, {work['generated_tokens']:.1f} "
          f"generated): encoder and one step {work['one_token_g']:.2f} G, whole rewrite {work['full_g']:.2f} G; "
          f"a decoder as efficient per multiply-add as the ceiling's run reaches a share of {work['share_bound']:.2f} "
          "(the compute bound)")
    return {"one_token": one, "fp32_full": fp32_full, "engines": engines, "chosen": best,
            "ceiling": engines[best]["ceiling"], "share": engines[best]["share"], "compute": work}


def identical(root: Path, prompts: list[str], shape: str, tokenizer: str, weights: str, draft: int) -> dict:
    """Greedy identity: the torch int8 export's rewrites with `draft` tokens drafted per pass against one token
    a pass, id for id, each in its own process."""
    same, runs = _drafting_identity(int8_export(root, shape, tokenizer, weights, "torch"), prompts, draft)
    print(f"greedy identity, torch int8 export ({shape} shape, {weights} weights), {len(prompts)} prompts: "
          f"{same}/{len(prompts)} rewrites identical with {draft} drafted tokens a pass and with none "
          f"({runs[draft]['prompts_per_s']:.2f} against {runs[0]['prompts_per_s']:.2f} prompts/s)")
    return {"prompts": len(prompts), "identical": same, "draft": draft,
            "prompts_per_s": {str(d): r["prompts_per_s"] for d, r in runs.items()}}


def _drafting_identity(directory: Path, prompts: list[str], draft: int) -> tuple[int, dict]:
    """(rewrites identical id for id, the two runs): a torch int8 export drafting `draft` tokens a pass against
    one token a pass, each in its own process."""
    runs = {d: in_process(functools.partial(_measure, str(directory), prompts, draft=d, ids=True)) for d in (draft, 0)}
    return sum(a == b for a, b in zip(runs[draft]["ids"], runs[0]["ids"])), runs


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
    torch_int8 = export(adapter, root / "toy-torch-int8", "torch", "int8")
    result = compare(adapter, torch_int8, prompts)
    out["torch int8"] = {k: result[k] for k in ("prompts", "same", "rate")}
    print(f"  torch int8 (copydecode) {result['same']}/{result['prompts']} ({100 * result['rate']:.1f}%)")
    same, _ = _drafting_identity(torch_int8, prompts, DRAFT_TOKENS)
    out["identity"] = {"prompts": len(prompts), "identical": same, "draft": DRAFT_TOKENS}
    print(f"  torch int8 greedy identity: {same}/{len(prompts)} rewrites identical with {DRAFT_TOKENS} drafted "
          f"tokens a pass and with none")
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


def migrate(root: Path, prompts: list[str], rows: int, shape: str, tokenizer: str, weights: str) -> dict:
    engine_dir = int8_export(root, shape, tokenizer, weights)
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


def isa(root: Path, prompts: list[str], shape: str, repeats: int, tokenizer: str, weights: str) -> dict:
    """The int8 export on the AVX-512 kernels sd-bridge asks for against ctranslate2's own AVX2 choice, in
    alternating fresh processes, `repeats` pairs: whole runs of this benchmark on the 2-core machine differ by
    about 10%, more than the two kernels do, so one pair proves little."""
    from bridge.models.engine import ISA_VARIABLE, cpu_flags, isa_to_force

    if isa_to_force(cpu_flags(), {}) != "AVX512":
        print("isa: this CPU lacks AVX-512; nothing to compare")
        return {}
    engine_dir = int8_export(root, shape, tokenizer, weights)
    runs: dict[str, list[float]] = {"AVX512": [], "AVX2": []}
    for _ in range(repeats):
        for name, rates in runs.items():
            rates.append(in_process(functools.partial(_measure, str(engine_dir), prompts,
                                                      env={ISA_VARIABLE: name}))["prompts_per_s"])
    ratios = [a / b for a, b in zip(runs["AVX512"], runs["AVX2"])]
    print(f"ctranslate2 int8, {shape} shape, {len(prompts)} prompts, {repeats} alternating pairs of processes:")
    for name, rates in runs.items():
        print(f"  {name:6s} " + " ".join(f"{r:6.2f}" for r in rates) + f"  prompts/s (mean {statistics.mean(rates):.2f})")
    print("  AVX512 / AVX2 per pair: " + " ".join(f"{r:.3f}" for r in ratios)
          + f" (mean {statistics.mean(ratios):.3f})")
    return {"prompts_per_s": runs, "ratios": ratios}


def _variant(argv: list[str]) -> str:
    """A run of the migrate part alone has its own results file: it takes as long as the other parts together,
    and rerunning one should not lose the other's figures."""
    parts = argparse.ArgumentParser(add_help=False)
    parts.add_argument("--parts", nargs="+", default=[])
    return "migrate" if parts.parse_known_args(argv)[0].parts == ["migrate"] else ""


@recorded("inference_backends", _variant)
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--parts", nargs="+", choices=["speed", "bound", "identity", "agreement", "migrate", "isa"],
                    default=["speed", "bound", "identity", "agreement", "migrate"])
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="t5",
                    help="the shaped rewriters' tokenizer: flan-t5's own (t5) or tiny-t5's 2,000 pieces")
    ap.add_argument("--weights", choices=WEIGHTS, default="copying",
                    help="the shaped rewriters' weights: copying their source as a translation mostly does, or random")
    ap.add_argument("--draft-tokens", type=int, default=DRAFT_TOKENS, help="tokens copydecode drafts per pass")
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs of processes the isa part runs")
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="shapes speed measures")
    ap.add_argument("--migrate-shape", choices=list(SHAPES), default="flan-t5-base", help="the rewriter migrate uses")
    ap.add_argument("--library-rows", type=int, default=10_000, help="rows of the library migrate runs on")
    ap.add_argument("--identity-prompts", type=int, default=1000, help="real prompts the identity part rewrites")
    args = ap.parse_args(argv)
    if args.draft_tokens < 0:
        ap.error(f"--draft-tokens must be >= 0, got {args.draft_tokens}")
    prompts = real_prompts(args.prompts)
    shape, tok, weights = args.migrate_shape, args.tokenizer, args.weights
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "agreement" in args.parts:
            result["agreement"] = agreement(root)
        if "speed" in args.parts:
            result["speed"] = speed(root, prompts, args.shapes, tok, weights, args.draft_tokens)
        if "bound" in args.parts:
            result["bound"] = bound(root, prompts, shape, tok, weights, result.get("speed", {}).get(shape))
        if "identity" in args.parts:
            result["identity"] = identical(root, real_prompts(args.identity_prompts), shape, tok, weights,
                                           args.draft_tokens)
        if "migrate" in args.parts:
            result["migrate"] = migrate(root, prompts, args.library_rows, shape, tok, weights)
        if "isa" in args.parts:
            result["isa"] = isa(root, prompts, shape, args.repeats, tok, weights)
    if "speed" in result and "flan-t5-base" in result["speed"]:
        ratio = result["speed"]["flan-t5-base"]["ctranslate2 int8"]["ratio"]
        line = f"speedup vs fp32: {ratio:.1f}"
        if "bound" in result and shape == "flan-t5-base":
            chosen = result["bound"]["chosen"]
            ratio = result["speed"]["flan-t5-base"][chosen]["ratio"]
            line = (f"speedup vs fp32: {ratio:.1f}, share of ceiling: {result['bound']['share']:.2f}, compute "
                    f"bound {result['bound']['compute']['share_bound']:.2f} ({chosen}")
        else:
            line += " (ctranslate2 int8"
        print(f"{line}, flan-t5-base shape, {weights} weights, {len(prompts)} prompts)")
    return result


if __name__ == "__main__":
    main()
