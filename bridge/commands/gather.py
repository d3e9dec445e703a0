"""`sd-bridge gather`: render a prompt library with the source model at fixed seeds into a resumable dataset of
images and scorer embeddings (data/gather.py does the work; `accelerate launch` splits it between processes).

A command only parses and dispatches: the stage is library code that the demo, the benchmarks and the tests
call too, and it imports nothing from here.
"""

from __future__ import annotations

from data.gather import GatherConfig

__all__ = ["GatherConfig", "run_gather"]


def run_gather(cfg: GatherConfig, log=print) -> int:
    from data.gather import run_gather as stage

    stage(cfg, log=log)
    return 0
