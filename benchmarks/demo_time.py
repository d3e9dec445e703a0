"""`sd-bridge demo` wall time on this machine against its 3-minute budget (issue: <= 3 min on 2 CPU cores).

Runs the demo twice in fresh processes, each into a new output directory: once with an empty sd-bridge cache,
as on a fresh machine, and once more, and prints both with the ratio to the 180 s budget.

    uv run python -m benchmarks.demo_time
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from benchmarks.results import recorded

BUDGET_S = 180.0


def run_once(cache: str, out: str) -> float:
    env = dict(os.environ, SD_BRIDGE_CACHE=cache, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bridge.cli", "demo", "--out", out], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@recorded("demo_time")
def main(argv: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cold = run_once(os.path.join(tmp, "cache"), os.path.join(tmp, "cold"))
        warm = run_once(os.path.join(tmp, "cache"), os.path.join(tmp, "warm"))
    print(f"demo: cold {cold:.1f}s (ratio to {BUDGET_S:.0f}s budget {cold / BUDGET_S:.2f}), "
          f"warm {warm:.1f}s (ratio {warm / BUDGET_S:.2f})")
    return {"cold_s": round(cold, 1), "warm_s": round(warm, 1), "budget_s": BUDGET_S}


if __name__ == "__main__":
    main()
