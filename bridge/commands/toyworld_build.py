"""`sd-bridge toyworld build`: the toy world's four models trained from its grammar, deterministically (toyworld/build.py).

A command only parses and dispatches: the stage is library code that the demo, the benchmarks and the tests
call too, and it imports nothing from here.
"""

from __future__ import annotations

from toyworld.build import BuildConfig

__all__ = ["BuildConfig", "run_build"]


def run_build(cfg: BuildConfig, log=print) -> int:
    from toyworld.build import run_build as stage

    stage(cfg, log=log)
    return 0
