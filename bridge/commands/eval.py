"""`sd-bridge eval`: identity, syntax, adapters and translation files scored on held-out prompts; a report in
json, markdown and html (eval/run.py does the work).

A command only parses and dispatches: the stage is library code that the demo, the benchmarks and the tests
call too, and it imports nothing from here.
"""

from __future__ import annotations

from eval.config import EvalConfig

__all__ = ["EvalConfig", "run_eval"]


def run_eval(cfg: EvalConfig, log=print) -> int:
    from eval.run import run_eval as stage

    stage(cfg, log=log)
    return 0
