"""`sd-bridge train`: a LoRA on the rewriter trained so that the target's renders of its rewrites agree with the
gathered source images (training/trainer.py holds the algorithm; `accelerate launch` runs it with DDP).

A command only parses and dispatches: the stage is library code that the demo, the benchmarks and the tests
call too, and it imports nothing from here.
"""

from __future__ import annotations

from training.config import TrainConfig

__all__ = ["TrainConfig", "run_train"]


def run_train(cfg: TrainConfig, log=print) -> int:
    from training.trainer import run_train as stage

    stage(cfg, log=log)
    return 0
