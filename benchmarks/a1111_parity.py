"""Differential measure against AUTOMATIC1111's own code: how often `bridge.syntax.a1111` reads a prompt as A1111 does.

    uv run python -m benchmarks.a1111_parity --webui PATH/TO/stable-diffusion-webui [--steps 20]

A1111 cannot be installed from a package registry, so the measure needs a checkout of it (its
`modules/prompt_parser.py` and `modules/sd_hijack_clip.py`; lark, a dev dependency, runs its grammar).
For every prompt and negative in ../shared/prompts/a1111.jsonl it runs A1111's passes:
  extra-network tags removed (prompt only) -> `get_multicond_prompt_list` (AND parts and weights) ->
  `get_learned_conditioning_prompt_schedules` -> `parse_prompt_attention` -> `tokenize_line` (chunks),
and compares, per AND part and per schedule step, the part weight, the (text, weight) runs and the chunk
sizes with ours. Baseline in the same run: the tree reading (`bridge.syntax.prompt.segments`) that the encoder used
before, compared at the last step. Last line: `chunk boundaries equal: X% (baseline tree reading Y%)`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import time
import types
from pathlib import Path

import ftfy

from benchmarks.results import recorded
from bridge.syntax.a1111 import attention, read
from bridge.syntax.prompt import And, Break, parse, segments
from bridge.syntax.tokens import (
    _is_comma,
    build_clip_tokenizer,
    clip_tokenizer,
    pack_chunks,
    token_runs,
)

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "prompts" / "a1111.jsonl"
_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")  # A1111 modules/extra_networks.py re_extra_net


def _a1111_clean(text: str) -> str:
    """What A1111's tokenizer does to text before BPE. A1111 pins transformers 4.30.2, whose slow CLIPTokenizer
    `_tokenize` runs `whitespace_clean(ftfy.fix_text(text)).lower()` when ftfy is importable (it is: A1111
    installs open-clip-torch, which requires it); the transformers installed here dropped that step, so
    without this its tokenizer would split full-width punctuation that A1111 reads as ASCII."""
    return re.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()


def load_webui(root: Path):
    """A1111's prompt_parser module, and its `tokenize_line` bound to a stand-in with the real CLIP tokenizer."""
    spec = importlib.util.spec_from_file_location("a1111_prompt_parser", root / "modules" / "prompt_parser.py")
    parser = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parser)
    # tokenize_line and the two small types it uses, taken from sd_hijack_clip.py without its imports
    # (modules.shared, devices, sd_hijack need a running WebUI).
    tree = ast.parse((root / "modules" / "sd_hijack_clip.py").read_text(encoding="utf-8"))
    keep = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PromptChunk"
            or isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PromptChunkFix"]
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FrozenCLIPEmbedderWithCustomWordsBase")
    keep.append(next(n for n in base.body if isinstance(n, ast.FunctionDef) and n.name == "tokenize_line"))
    from collections import namedtuple

    namespace = {"namedtuple": namedtuple, "prompt_parser": parser,
                 "opts": types.SimpleNamespace(emphasis="Original", comma_padding_backtrack=20)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "sd_hijack_clip.py", "exec"), namespace)
    tok = build_clip_tokenizer()
    vocab = tok.get_vocab()
    clip = types.SimpleNamespace(
        chunk_length=75, comma_token=vocab.get(",</w>"), id_start=tok.bos_token_id, id_end=tok.eos_token_id,
        tokenize=lambda texts: tok([_a1111_clean(t) for t in texts], truncation=False,
                                   add_special_tokens=False)["input_ids"],
        hijack=types.SimpleNamespace(embedding_db=types.SimpleNamespace(find_embedding_at_position=lambda t, p: (None, None))))
    tokenize_line = namespace["tokenize_line"]

    def chunk_sizes(text: str) -> list[int]:
        chunks, _ = tokenize_line(clip, text)
        return [c.tokens.index(clip.id_end, 1) - 1 for c in chunks]

    return parser, chunk_sizes


def theirs(parser, chunk_sizes, text: str, negative: bool, steps: int) -> list:
    if not negative:
        text = _EXTRA_NET.sub("", text)
        [indexes], flat, _ = parser.get_multicond_prompt_list([text])
        parts = [(flat[i], w) for i, w in indexes]
    else:
        parts = [(text, 1.0)]
    out = []
    for part, weight in parts:
        [sched] = parser.get_learned_conditioning_prompt_schedules([part], steps)
        out.append((weight, [(end, [(t, round(w, 6)) for t, w in parser.parse_prompt_attention(step_text)],
                              chunk_sizes(step_text)) for end, step_text in sched]))
    return out


def ours(text: str, negative: bool, steps: int) -> list:
    pieces = clip_tokenizer().pieces
    out = []
    for part in read(text, negative, steps):
        entries = []
        for end, t in part.schedule:
            runs = attention(t)
            sizes = [len(c) for c, _ in pack_chunks(token_runs(runs, pieces), _is_comma)]
            entries.append((end, [(r, round(w, 6)) for r, w in runs], sizes))
        out.append((part.weight, entries))
    return out


def tree_reading(text: str, negative: bool, steps: int) -> tuple[list, list[int]]:
    """The baseline: the tree's last-step segments, and their chunk sizes, AND parts concatenated."""
    runs = [None if type(s) in (And, Break) else s for s in segments(parse(text, negative=negative).nodes, steps=steps)]
    return runs, [len(c) for c, _ in pack_chunks(token_runs(runs, clip_tokenizer().pieces), _is_comma)]


@recorded("a1111_parity")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--webui", type=Path, required=True, help="a checkout of AUTOMATIC1111/stable-diffusion-webui")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=Path, default=PROMPTS)
    args = ap.parse_args(argv)
    parser, chunk_sizes = load_webui(args.webui)
    rows = [json.loads(line) for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [(t, neg) for r in rows for t, neg in ((r["prompt"], False), (r.get("negative_prompt") or "", True))]
    same = {"part weights": 0, "schedules": 0, "weights per step": 0, "chunks per step": 0}
    base_chunks = base_weights = 0
    differ: list[str] = []
    started = time.perf_counter()
    for text, negative in texts:
        a, b = theirs(parser, chunk_sizes, text, negative, args.steps), ours(text, negative, args.steps)
        same["part weights"] += [w for w, _ in a] == [w for w, _ in b]
        same["schedules"] += [[e for e, _, _ in s] for _, s in a] == [[e for e, _, _ in s] for _, s in b]
        same["weights per step"] += [[r for _, r, _ in s] for _, s in a] == [[r for _, r, _ in s] for _, s in b]
        same["chunks per step"] += [[c for _, _, c in s] for _, s in a] == [[c for _, _, c in s] for _, s in b]
        if a != b and len(differ) < 5:
            differ.append(text[:120])
        # Baseline: A1111 at the last step, AND parts' chunks concatenated, against the tree reading.
        last_chunks = [c for _, s in a for c in s[-1][2]]
        last_runs = [r for _, s in a for r in s[-1][1] if r[0].strip() and r != ("BREAK", -1.0)]
        runs, sizes = tree_reading(text, negative, args.steps)
        base_chunks += sizes == last_chunks
        merged: list = []
        for r in runs:
            if r is not None and r[0].strip():
                if merged and merged[-1][1] == round(r[1], 6):
                    merged[-1] = (merged[-1][0] + r[0], merged[-1][1])
                else:
                    merged.append((r[0], round(r[1], 6)))
        base_weights += [(t.strip(), w) for t, w in merged] == [(t.strip(), w) for t, w in last_runs]
    n = len(texts)
    print(f"{n} prompts and negatives from {args.prompts.name}, {args.steps} steps, "
          f"{time.perf_counter() - started:.0f} s (A1111's lark Earley parser dominates)")
    for key, count in same.items():
        print(f"  {key:<18} equal to A1111: {count}/{n} ({100 * count / n:.2f}%)")
    print(f"  baseline, tree reading at the last step: weights {100 * base_weights / n:.2f}%, "
          f"chunks {100 * base_chunks / n:.2f}%")
    for text in differ:
        print(f"  differs: {text!r}")
    print(f"chunk boundaries equal: {100 * same['chunks per step'] / n:.2f}% "
          f"(baseline tree reading {100 * base_chunks / n:.2f}%)")
    return {"texts": n, "steps": args.steps, "equal_percent": {k: 100 * c / n for k, c in same.items()},
            "baseline_weights_percent": 100 * base_weights / n, "baseline_chunks_percent": 100 * base_chunks / n,
            "differs": differ}


if __name__ == "__main__":
    main()
