"""`sd-bridge train`: a LoRA on the rewriter trained so that the target's renders of its rewrites agree with the
gathered source images (training/trainer.py; `accelerate launch` runs it with DDP)."""

from __future__ import annotations

from bridge.commands import stage
from training.config import TrainConfig

__all__ = ["TrainConfig", "run_train"]

run_train = stage("training.trainer", "run_train")
