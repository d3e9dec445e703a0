"""The learning curves of a run, drawn from its `train_log.jsonl` into `learning_curves.png` beside the adapter:
the mean reward of each optimisation step (and its running mean over 10 steps), and, with `--val-data`, the
held-out agreement at checkpoints against identity on the same prompts."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.models.rewriter import CURVES

LOG = "train_log.jsonl"  # one JSON row per step (and per validation), in the adapter directory


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """A run's train_log.jsonl as (step rows, validation rows); empty when there is no log yet."""
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    return [r for r in rows if r.get("phase") != "val"], [r for r in rows if r.get("phase") == "val"]


def running_mean(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_curves(log_path: Path, out: Path) -> Path | None:
    """Write out/learning_curves.png; None when the log has no optimisation step to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, val = read_log(log_path)
    rewards = [(r["step"], r["reward_mean"]) for r in steps if r.get("reward_mean") is not None]
    if not rewards and not val:
        return None
    panels = 2 if val else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    if rewards:
        steps, values = zip(*rewards)
        ax.plot(steps, values, color="#bbb", lw=0.8, label="step mean")
        ax.plot(steps, running_mean(list(values)), color="#1f77b4", lw=1.6, label="running mean (10 steps)")
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("reward (training prompts)")
    ax.set_title("Reward per step")
    if val:
        ax = axes[0][1]
        ax.plot([r["step"] for r in val], [r["val_agreement"] for r in val], "o-", color="#d62728", label="adapter")
        ax.axhline(val[0]["val_identity"], color="grey", ls="--", lw=1, label="identity")
        ax.set_xlabel("step")
        ax.set_ylabel("agreement (held-out prompts)")
        ax.set_title(f"Held-out agreement ({val[0]['val_prompts']} prompts)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) / CURVES
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
