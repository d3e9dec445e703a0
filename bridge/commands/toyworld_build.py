"""`sd-bridge toyworld build`: the toy world's four models trained from its grammar, deterministically
(toyworld/build.py)."""

from __future__ import annotations

from bridge.commands import stage
from toyworld.build import BuildConfig

__all__ = ["BuildConfig", "run_build"]

run_build = stage("toyworld.build", "run_build")
