"""Parse + serialize throughput over ../shared/prompts/a1111.jsonl (target: >= 10,000 prompts/s on one core).

The same run also times A1111's own attention tokenizer regex (`re_attention.findall`, which only splits
emphasis and nothing else) on the same prompts, so the printout shows what a full lossless parse costs
against the cheapest thing A1111 itself does per prompt on this machine.

    uv run python -m benchmarks.prompt_parse
"""

from __future__ import annotations

import json
import re
import time

from benchmarks.results import recorded
from bridge.models.tiny import default_prompts_dir
from bridge.syntax.prompt import parse

TARGET = 10_000
# modules/prompt_parser.py in AUTOMATIC1111/stable-diffusion-webui.
RE_ATTENTION = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:", re.X)


def best_rate(fn, prompts: list[str], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in prompts:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return len(prompts) / best


@recorded("prompt_parse")
def main(argv: list[str] | None = None) -> dict:
    path = default_prompts_dir() / "a1111.jsonl"
    with path.open(encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"] for line in fh]
    ours = best_rate(lambda p: parse(p).serialize(), prompts)
    regex = best_rate(RE_ATTENTION.findall, prompts)
    result = {"prompts": len(prompts), "parse_serialize_per_s": round(ours), "target_per_s": TARGET,
              "ratio_vs_target": round(ours / TARGET, 2), "a1111_regex_per_s": round(regex),
              "ratio_vs_a1111_regex": round(ours / regex, 3)}
    print(f"parse+serialize: {ours:,.0f} prompts/s over {len(prompts)} A1111 prompts "
          f"(target {TARGET:,}/s -> ratio {ours / TARGET:.2f}; "
          f"A1111 attention regex alone {regex:,.0f}/s -> ratio {ours / regex:.3f})")
    return result


if __name__ == "__main__":
    main()
