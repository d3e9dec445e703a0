"""Differential measure against ComfyUI's own code: `bridge.syntax.comfyui` reads prompts as ComfyUI does, and an
A1111 prompt converted with `from_a1111` carries A1111's weights into ComfyUI.

    uv run python -m benchmarks.comfyui_parity --comfyui PATH/TO/ComfyUI [--webui PATH/TO/stable-diffusion-webui]

ComfyUI is not a package, so the measure needs a checkout: it takes `escape_important`, `unescape_important`,
`parse_parentheses` and `token_weights` out of its `comfy/sd1_clip.py` (pure functions; the module's imports
need torch and a running ComfyUI) and runs them as CLIPTextEncode does. With `--webui`, A1111's side is
A1111's own `prompt_parser` too (see benchmarks/a1111_parity.py); without it, `bridge.syntax.a1111`.

1. Reading: on every prompt and negative in ../shared/prompts and on random bracket soup, our (text, weight)
   runs against ComfyUI's. Baseline: reading the same text with A1111's rules, what a tool that knows one
   dialect does.
2. Conversion: on every prompt and negative without editing, alternation or AND, ComfyUI's reading of the
   converted prompt against A1111's reading of the original, character by character. Baseline: the prompt
   pasted into ComfyUI unconverted.
Last line: `A1111 -> ComfyUI weights equal: X% of N prompts (unconverted Y%)`.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import time
from pathlib import Path

from benchmarks.results import recorded
from bridge.syntax import a1111, comfyui

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "prompts"
FUNCTIONS = ("escape_important", "unescape_important", "parse_parentheses", "token_weights")


def load_comfyui(root: Path):
    """ComfyUI's prompt reading: text -> merged (text, weight) runs, from its own functions."""
    source = root / "comfy" / "sd1_clip.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in FUNCTIONS]
    if len(keep) != len(FUNCTIONS):
        raise SystemExit(f"{source} lacks one of {', '.join(FUNCTIONS)}")
    namespace: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(source), "exec"), namespace)

    def read(text: str) -> list[tuple[str, float]]:
        pieces = namespace["token_weights"](namespace["escape_important"](text), 1.0)
        merged: list[list] = []
        for piece, w in pieces:
            piece = namespace["unescape_important"](piece)
            if merged and merged[-1][1] == w:
                merged[-1][0] += piece
            else:
                merged.append([piece, w])
        return [(t, w) for t, w in merged] or [("", 1.0)]

    return read


def a1111_reader(webui: Path | None):
    """A1111's runs for a prompt with one part and one schedule step (or None when it has more)."""
    if webui is None:
        def ours(text: str, negative: bool):
            parts = a1111.read(text, negative)
            if len(parts) > 1 or parts[0].weight != 1.0 or len(parts[0].schedule) > 1:
                return None
            return a1111.attention(parts[0].schedule[0][1])
        return ours
    from benchmarks.a1111_parity import load_webui, theirs

    parser, chunk_sizes = load_webui(webui)

    def real(text: str, negative: bool):
        parts = theirs(parser, chunk_sizes, text, negative, a1111.DEFAULT_STEPS)
        if len(parts) > 1 or parts[0][0] != 1.0 or len(parts[0][1]) > 1:
            return None
        return parts[0][1][0][1]
    return real


def corpus() -> list[tuple[str, bool]]:
    rows = []
    for path in sorted(PROMPTS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows += [(row[k], k == "negative_prompt") for k in ("prompt", "negative_prompt") if row.get(k)]
    return rows


def soup(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("()[]{}:,. ab1\\") + ["\\(", "\\)", ":1.2)", "embedding:x "]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(n)]


@recorded("comfyui_parity")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (its comfy/sd1_clip.py)")
    ap.add_argument("--webui", type=Path, default=None, help="an A1111 checkout for A1111's side (default: ours)")
    ap.add_argument("--soup", type=int, default=20000, help="random bracket strings to read")
    args = ap.parse_args(argv)
    theirs = load_comfyui(args.comfyui)
    rows = corpus()
    t0 = time.perf_counter()

    texts = [t for t, _ in rows] + soup(args.soup)
    same = sum(comfyui.attention(t) == theirs(t) for t in texts)
    baseline = sum(comfyui.same_weights(a1111.attention(t), theirs(t)) for t in texts)
    print(f"reading: ComfyUI's runs equal on {same}/{len(texts)} = {100 * same / len(texts):.2f}% "
          f"({len(rows)} corpus prompts and negatives, {args.soup} random strings); A1111 rules on the same: "
          f"{100 * baseline / len(texts):.2f}%")

    read_a1111 = a1111_reader(args.webui)
    kept = converted = pasted = 0
    misses = []
    for text, negative in rows:
        runs = read_a1111(text, negative)
        if runs is None:
            continue  # editing, alternation or AND: ComfyUI has no way to say them in the text
        kept += 1
        ok = comfyui.same_weights(theirs(comfyui.from_a1111(text, negative).prompt), runs)
        converted += ok
        pasted += comfyui.same_weights(theirs(a1111.strip_networks(text) if not negative else text), runs)
        if not ok:
            misses.append(text)
    for text in misses[:5]:
        print(f"  differs: {text[:120]!r}")
    side = f"A1111 at {args.webui}" if args.webui else "bridge.syntax.a1111"
    print(f"({time.perf_counter() - t0:.1f} s; A1111 side: {side})")
    print(f"A1111 -> ComfyUI weights equal: {100 * converted / kept:.2f}% of {kept} prompts "
          f"(unconverted {100 * pasted / kept:.2f}%)")
    return {"texts": len(texts), "corpus_texts": len(rows), "random_strings": args.soup,
            "reading_equal_percent": 100 * same / len(texts), "a1111_rules_percent": 100 * baseline / len(texts),
            "a1111_side": "A1111 checkout" if args.webui else "bridge.syntax.a1111", "converted_prompts": kept,
            "converted_equal_percent": 100 * converted / kept, "unconverted_equal_percent": 100 * pasted / kept}


if __name__ == "__main__":
    main()
