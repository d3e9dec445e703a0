"""Every parser of user text is linear-time (issue: reliability): each hostile input at 1 MB against the same
input at 100 kB, timed in the same run. Linear is a ratio near 10; the quadratic parsers this replaced took
100x (infotext: 40k characters of words took 11 s, 80k took 43 s).

    uv run python -m benchmarks.parse_linear
"""

from __future__ import annotations

import time

from benchmarks.results import recorded
from bridge.syntax.infotext import parse_infotext
from bridge.syntax.prompt import parse
from bridge.syntax.tokens import count_tokens

# name -> (parser, a unit repeated to size)
HOSTILE = {
    "prompt: run of spaces after 'x:' (AND weight)": (parse, "x:" + " " * 99),
    "prompt: '<a:' repeated (network tag)": (parse, "<a:"),
    "prompt: '(' repeated (nesting)": (parse, "("),
    "prompt: 'a AND ' repeated": (parse, "a AND "),
    "infotext: a last line of words": (lambda s: parse_infotext("p\n" + s), "a b "),
    "infotext: one long word": (lambda s: parse_infotext("p\n" + s), "x"),
    "infotext: unterminated quotes": (lambda s: parse_infotext("p\n" + s), 'k: "'),
    "tokens: one long word of varied letters (BPE)": (count_tokens, "abcdefghijklmnopqrstuvwxyzaeiouqwrtpsdfgh"),
}


def seconds(fn, text: str) -> float:
    t = time.perf_counter()
    fn(text)
    return time.perf_counter() - t


@recorded("parse_linear")
def main(argv: list[str] | None = None) -> dict:
    results = {}
    print("parsers on hostile input: 1 MB against 100 kB (linear: ~10x; target <= 20x)")
    for name, (fn, unit) in HOSTILE.items():
        small, large = ((unit * (size // len(unit) + 1))[:size] for size in (100_000, 1_000_000))
        a, b = seconds(fn, small), seconds(fn, large)
        results[name] = {"100kB_s": a, "1MB_s": b, "ratio": b / max(a, 1e-6)}
        print(f"  {name:52s} 100 kB {a:6.3f}s  1 MB {b:6.3f}s  ratio {b / max(a, 1e-6):5.1f}x")
    return results


if __name__ == "__main__":
    main()
