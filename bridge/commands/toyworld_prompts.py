"""`sd-bridge toyworld prompts`: fresh toy-world prompts, one JSON object per line.

Each line: `prompt` (source dialect), `negative_prompt`, `drifts` (the documented drifts it carries, empty
for none), `oracle` and `oracle_negative_prompt` (its correct translation for toy-sd2). Prompts are
distinct, and a held-out prompt never belongs to the train split (toyworld.world.split_of). With `--syntax
SHARE`, that share carries A1111 syntax (weights, emphasis, BREAK, comma-separated clauses, a LoRA tag; listed
under `syntax`) at the same places as its oracle (toyworld.world.weave); `sd-bridge eval --oracle` reads the
oracle from the file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from toyworld import world


@dataclass
class PromptsConfig:
    """Draw fresh toy-world prompts with their drifts and oracle translations."""

    n: int = field(default=100, metadata={"help": "how many prompts"})
    seed: int = field(default=0, metadata={"help": "seed of the draw"})
    split: str = field(default="train", metadata={"help": "train or heldout"})
    drift: str | None = field(default=None, metadata={
        "help": f"only prompts carrying this drift ({', '.join(world.DRIFTS)}), or none for prompts without "
                "drift; default: a mix with about a quarter without drift"})
    syntax: float = field(default=0.0, metadata={
        "help": "share of the prompts woven with A1111 syntax, the oracle alike (0 to 1; default 0)"})
    out: Path | None = field(default=None, metadata={"help": "JSONL file to write (default: standard output)"})

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.split not in ("train", "heldout"):
            raise ValueError(f"split must be train or heldout, got {self.split!r}")
        if self.drift is not None and self.drift not in (*world.DRIFTS, "none"):
            raise ValueError(f"unknown drift {self.drift!r}; choose one of {', '.join(world.DRIFTS)} or none")
        if not 0 <= self.syntax <= 1:
            raise ValueError(f"syntax must be a share from 0 to 1, got {self.syntax}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)  # standard output carries the JSONL only


def run_prompts(cfg: PromptsConfig, log=_stderr) -> int:
    from bridge.files import atomic_write

    rows = world.weave(world.generate_prompts(cfg.n, cfg.seed, cfg.split, cfg.drift), cfg.syntax, cfg.seed)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if cfg.out is None:
        sys.stdout.write(text)
    else:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cfg.out), text)
        log(f"wrote {len(rows)} {cfg.split} prompts to {cfg.out}")
    return 0
