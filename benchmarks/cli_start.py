"""How long `sd-bridge` takes to answer a syntax-only command, and how much memory it holds, against bare
`python -c pass` measured in the same run.

Issue #13: target <= 1.0 s for `translate "a cat"` on 2 cores (before, every command imported torch,
diffusers and transformers: 9.4 s). Issue #16: a syntax-only `migrate` held 1.1 GB RSS for the same reason;
target <= 200 MB here, on the 5,347 shared prompts.

    uv run python -m benchmarks.cli_start [--runs 5]

Each command runs in a fresh interpreter; the median wall time of `--runs` is reported, after one unmeasured
warm-up run that fills the OS file cache, with the peak RSS of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.results import recorded

# The console script users run, beside this interpreter (uv's .venv/bin); `python -m bridge.cli` otherwise.
_SCRIPT = Path(sys.executable).with_name("sd-bridge")
SD_BRIDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bridge.cli"]
PROMPTS = Path(__file__).resolve().parents[1].parent / "shared" / "prompts"
TARGET_S, TARGET_MB = 1.0, 200


def commands(tmp: Path) -> dict[str, list[str]]:
    library = tmp / "library.txt"
    lines = [json.loads(line)["prompt"].replace("\n", " ") for name in ("plain.jsonl", "a1111.jsonl")
             for line in (PROMPTS / name).read_text(encoding="utf-8").splitlines()]
    library.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "sd-bridge --help": SD_BRIDGE + ["--help"],
        "sd-bridge inspect 'a cat, (red:1.2)'": SD_BRIDGE + ["inspect", "a cat, (red:1.2)"],
        "sd-bridge translate 'a cat'": SD_BRIDGE + ["translate", "a cat"],
        f"sd-bridge migrate ({len(lines):,} prompts, syntax)": SD_BRIDGE + [
            "migrate", str(library), "--out", str(tmp / "out.txt"), "--no-progress"],
        "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
    }


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `cmd` in a fresh process, measured by a wrapper process of its own
    (RUSAGE_CHILDREN is the maximum over every child a process has waited for)."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True).stdout
    seconds, kb = out.split()
    return float(seconds), int(kb) / 1024


@recorded("cli_start")
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    results = {}
    print(f"CLI start: median wall of {args.runs} fresh processes each, and peak RSS")
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(Path(tmp)).items():
            _, rss = run(cmd)  # warm-up, and the memory of one run
            results[name] = {"seconds": statistics.median(run(cmd)[0] for _ in range(args.runs)), "rss_mb": rss}
    base = results["python -c pass"]["seconds"]
    for name, r in results.items():
        print(f"  {name:44s} {r['seconds']:6.3f} s ({r['seconds'] / base:6.1f}x python -c pass)  "
              f"peak RSS {r['rss_mb']:6.0f} MB")
    migrate = next(r for name, r in results.items() if "migrate" in name)
    print(f"syntax-only migrate peak RSS: {migrate['rss_mb']:.0f} MB (target <= {TARGET_MB} MB: "
          f"{'met' if migrate['rss_mb'] <= TARGET_MB else 'NOT met'})")
    translate = results["sd-bridge translate 'a cat'"]["seconds"]
    print(f"translate 'a cat': {translate:.2f} s, {translate / base:.1f}x python -c pass "
          f"(target <= {TARGET_S:.1f} s: {'met' if translate <= TARGET_S else 'NOT met'})")
    return results


if __name__ == "__main__":
    main()
