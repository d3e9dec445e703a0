"""`sd-bridge learn` end to end on the toy world (#42): its time on this machine, and a run killed twice.

    uv run python -m benchmarks.learn [--budget small] [--kills 2]

The library is the toy world's train split (`toyworld/prompts/train.jsonl`); learn holds out a tenth of its
meanings itself. One uninterrupted run is timed (the issue's bound: 10 minutes on 2 cores). A second run into
another directory is killed with SIGKILL at `--kills` random moments, each rerun with the same command, and must
end where the uninterrupted run ended: the same adapter bytes, the same held-out agreements, an export and a
card. Above the last line it prints the plan's estimate against the time taken, and the adapter's held-out
result (vs identity, and the share of the toy oracle's gain it recovers). The last line reads
`learn: S s on the toy world at --budget B; killed K times, resumed identical: yes|no`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorded

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "toyworld" / "prompts" / "train.jsonl"


def command(out: Path, budget: str) -> list[str]:
    return [sys.executable, "-m", "bridge.cli", "learn", str(LIBRARY), "--source", "toy-sd15", "--target", "toy-sd2",
            "--budget", budget, "--device", "cpu", "--no-progress", "--out", str(out)]


def run_whole(out: Path, budget: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command(out, budget), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"learn failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - started, proc.stdout


def run_killed(out: Path, budget: str, kills: int, within: float, seed: int = 0) -> list[str]:
    """Kill the run at `kills` random moments within `within` seconds of each start; then let it finish. Returns
    the stages done at each kill."""
    rng, at = random.Random(seed), []
    for _ in range(kills):
        proc = subprocess.Popen(command(out, budget), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.2, 0.9) * within)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        state = out / "learn.json"
        at.append(",".join(json.loads(state.read_text())["done"]) if state.is_file() else "nothing")
    subprocess.run(command(out, budget), capture_output=True, text=True, cwd=ROOT, check=True)
    return at


def _same(a: Path, b: Path) -> dict:
    report = lambda d: json.loads((d / "report" / "report.json").read_text())  # noqa: E731
    ra, rb = report(a), report(b)
    agreement = {k: (v["agreement_mean"], rb["strategies"][k]["agreement_mean"]) for k, v in ra["strategies"].items()}
    return {"adapter_bytes": (a / "adapter" / "adapter_model.safetensors").read_bytes()
            == (b / "adapter" / "adapter_model.safetensors").read_bytes(),
            "agreements": all(x == y for x, y in agreement.values()),
            "export": (b / "export" / "sd_bridge_adapter.json").is_file(), "card": (b / "README.md").is_file()}


def _variant(argv: list[str]) -> str:
    return ""


@recorded("learn", _variant)
def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="small")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sd-bridge-learn-"))
    # The plan a user gets offline first (rates from the committed table), then the run it planned.
    dry = subprocess.run(command(work / "whole", args.budget) + ["--dry-run", "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    the_plan = json.loads(dry.stdout)
    seconds, _ = run_whole(work / "whole", args.budget)
    state = json.loads((work / "whole" / "learn.json").read_text())
    report = json.loads((work / "whole" / "report" / "report.json").read_text())
    adapter = next(k for k in report["strategies"] if k.startswith("adapter:"))
    a = report["strategies"][adapter]
    print(f"plan: {the_plan['source_renders']} source and {the_plan['target_renders']} target renders, "
          f"{the_plan['estimated_seconds']} s estimated for them at most (dry run); it took {seconds:.0f} s "
          f"(stages {state['seconds']})")
    print(f"adapter vs identity on {report['prompts']} held-out prompts: {a['vs_identity']['delta_mean']:+.4f}, "
          f"gap recovered {a.get('gap_recovered')}")
    kills = run_killed(work / "killed", args.budget, args.kills, seconds)
    same = _same(work / "whole", work / "killed")
    identical = all(same.values())
    print(f"learn: {seconds:.0f} s on the toy world at --budget {args.budget}; killed {args.kills} times "
          f"(after: {'; '.join(kills)}), resumed identical: {'yes' if identical else 'no'}")
    return {"budget": args.budget, "seconds": round(seconds, 1), "stage_seconds": state["seconds"], "plan": the_plan,
            "heldout_prompts": report["prompts"], "vs_identity": a["vs_identity"]["delta_mean"],
            "vs_identity_ci95": a["vs_identity"].get("delta_ci95"), "gap_recovered": a.get("gap_recovered"),
            "gap_recovered_ci95": a.get("gap_recovered_ci95"), "kills": args.kills, "killed_after": kills,
            "resumed": same, "resumed_identical": identical, "within_10_minutes": seconds <= 600}


if __name__ == "__main__":
    main()
