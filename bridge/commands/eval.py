"""`sd-bridge eval`: identity, syntax, adapters and translation files scored on held-out prompts; a report in
json, markdown and html (eval/run.py)."""

from __future__ import annotations

from bridge.commands import stage
from eval.config import EvalConfig

__all__ = ["EvalConfig", "run_eval"]

run_eval = stage("eval.run", "run_eval")
