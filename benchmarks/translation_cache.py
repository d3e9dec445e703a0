"""The translation cache (issue #15): `migrate` of a library it has migrated before, against the first run.

    uv run python -m benchmarks.translation_cache [--prompts 1000] [--max-new-tokens 48]

An adapter on a rewriter of flan-t5-small's shape (random weights: the same compute as trained ones) migrates
`--prompts` distinct real prompts (../shared/prompts/plain.jsonl) into one file with an empty translation
cache, then the same library into another file with the cache the first run filled. Both runs in this process
(torch and transformers already imported, as in a server or a script), each including its adapter load.
Target: the second run's rows/s >= 50x the first's; the two outputs must be identical.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.migrate_speed_memory import small_shaped_adapter
from benchmarks.results import recorded
from bridge.models.tiny import default_prompts_dir


@recorded("translation_cache")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    from bridge.commands.migrate import MigrateConfig, run_migrate

    seen: dict[str, None] = {}
    with (default_prompts_dir() / "plain.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            seen.setdefault(" ".join(json.loads(line)["prompt"].split()), None)
            if len(seen) == args.prompts:
                break
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapter = small_shaped_adapter(tmp, args.max_new_tokens)
        library = tmp / "library.jsonl"
        library.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in seen), encoding="utf-8")
        runs = []
        for name in ("first", "second"):
            summary: dict = {}
            cfg = MigrateConfig(input=library, out=tmp / f"{name}.jsonl", adapter=adapter,
                                translation_cache=str(tmp / "cache.sqlite"), progress=False)
            start = time.perf_counter()
            run_migrate(cfg, log=lambda line: summary.setdefault("log", []).append(line))
            runs.append({"seconds": time.perf_counter() - start, "log": summary["log"]})
        same = (tmp / "first.jsonl").read_bytes() == (tmp / "second.jsonl").read_bytes()
    n = len(seen)
    first, second = (n / r["seconds"] for r in runs)
    print(f"translation_cache ({n} distinct prompts, adapter on a flan-t5-small-shaped rewriter, "
          f"max_new_tokens={args.max_new_tokens}, {__import__('torch').get_num_threads()} threads)")
    for name, r in zip(("first run, empty cache", "second run, same library"), runs):
        cache_line = next(line for line in r["log"] if line.startswith("translation cache"))
        print(f"  {name}: {r['seconds']:.1f} s ({n / r['seconds']:.1f} rows/s); {cache_line}")
    print(f"  outputs identical: {same}")
    print(f"second run / first run rate: {second / first:.0f}x (target >= 50x)")
    return {"rows": n, "first_s": runs[0]["seconds"], "second_s": runs[1]["seconds"], "ratio": second / first,
            "identical": same}


if __name__ == "__main__":
    main()
