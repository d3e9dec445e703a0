"""`sd-bridge gather`: render a prompt library with the source model at fixed seeds into a resumable dataset of
images and scorer embeddings (data/gather.py; `accelerate launch` splits it between processes)."""

from __future__ import annotations

from bridge.commands import stage
from data.gather import GatherConfig

__all__ = ["GatherConfig", "run_gather"]

run_gather = stage("data.gather", "run_gather")
