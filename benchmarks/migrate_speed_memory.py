"""`migrate` with a learned rewriter: batched path vs a naive one-prompt-at-a-time `generate` loop, and
flat memory as the library grows.

1. Speed: prompts from ../shared/prompts/plain.jsonl through `Translator` with an adapter on a rewriter of
   flan-t5-small's shape (random weights; they cost the same as trained ones), against a loop that calls
   `model.generate` once per prompt, same model, same token-limit rule, same run. Target: >= 8x.
2. Memory: `sd-bridge migrate` in a fresh process over 1,000 and 10,000 rows (plain.jsonl repeated);
   peak RSS ratio. Target: <= 1.2x. (The syntax strategy: the streaming path is the same with an adapter,
   and 10,000 rows of random-weight generation would take an hour on 2 CPU cores.)

    uv run python -m benchmarks.migrate_speed_memory [--prompts 64] [--max-new-tokens 48] [--batch-size 64]
        [--parts speed memory]
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
from bridge.models.tiny import default_prompts_dir


def small_shaped_adapter(root: Path, max_new_tokens: int) -> Path:
    """A flan-t5-small-shaped T5 (random) with the tiny-t5 tokenizer as it is, and an identity LoRA on it."""
    from benchmarks.inference_backends import shaped_adapter

    return shaped_adapter(root, "flan-t5-small", max_new_tokens, vocab=None, tokenizer="tiny-t5")


def speed(n: int, max_new_tokens: int, batch_size: int) -> dict:
    import torch

    from bridge.models.rewriter import PREFIX
    from bridge.translator import Translator

    with (default_prompts_dir() / "plain.jsonl").open(encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"].strip() for _, line in zip(range(n), fh)]
    with tempfile.TemporaryDirectory() as tmp:
        tr = Translator.from_pretrained(small_shaped_adapter(Path(tmp), max_new_tokens), batch_size=batch_size)
        model, tok = tr.model, tr.tokenizer
        tr.translate(prompts[:2])  # warm-up
        start = time.perf_counter()
        tr.translate(prompts)
        batched = time.perf_counter() - start
        start = time.perf_counter()
        for p in prompts:  # the naive path: one generate call per prompt, with the translator's limit rule
            limit = max(max_new_tokens, 2 * len(tok(p, add_special_tokens=False).input_ids) + 8)
            with torch.inference_mode():
                model.generate(**tok([PREFIX + p], return_tensors="pt"), max_new_tokens=limit)
        naive = time.perf_counter() - start
    print(f"migrate speed: {n} prompts, rewriter of flan-t5-small shape, max_new_tokens={max_new_tokens}: "
          f"batched {n / batched:.1f} prompts/s vs naive loop {n / naive:.1f} prompts/s -> ratio {naive / batched:.1f}x"
          f" (target >= 8x)")
    return {"batched_s": batched, "naive_s": naive, "ratio": naive / batched}


def peak_rss_mb(rows: int, tmp: Path) -> float:
    lines = (default_prompts_dir() / "plain.jsonl").read_text(encoding="utf-8").splitlines()
    src = tmp / f"lib{rows}.jsonl"
    src.write_text("\n".join((lines * (rows // len(lines) + 1))[:rows]) + "\n", encoding="utf-8")
    # The child's own peak, VmHWM. Not ru_maxrss: Linux carries that across fork and exec, so the child would
    # report this process's peak (torch and a rewriter loaded by part 1) whenever it is the larger.
    code = ("import sys; from bridge.cli import main; rc = main(['migrate', sys.argv[1], '--out', sys.argv[2], "
            "'--no-progress']); print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp / f"out{rows}.jsonl")], check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    return int(out) / 1024


def memory() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = peak_rss_mb(1_000, Path(tmp)), peak_rss_mb(10_000, Path(tmp))
    print(f"migrate memory: peak RSS {small:.0f} MB at 1,000 rows, {large:.0f} MB at 10,000 rows -> "
          f"ratio {large / small:.3f} (target <= 1.2)")
    return {"rss_1k_mb": small, "rss_10k_mb": large, "ratio": large / small}


@recorded("migrate_speed_memory")
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    # Random weights never emit EOS, so every output costs exactly max_new_tokens decoder steps. 48 is about
    # a typical plain.jsonl prompt in T5 tokens (median 17 words, p90 44); shorter outputs favour the naive
    # loop (measured here: ~6x at 16 tokens, ~10x at 48), the flan-t5 presets allow 96.
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--parts", nargs="+", choices=["speed", "memory"], default=["speed", "memory"])
    args = ap.parse_args(argv)
    out = {}
    if "speed" in args.parts:
        out["speed"] = speed(args.prompts, args.max_new_tokens, args.batch_size)
    if "memory" in args.parts:
        out["memory"] = memory()
    return out


if __name__ == "__main__":
    main()
