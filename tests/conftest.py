"""Shared fixtures: tiny models only, no hub, a per-session model cache (built once, like a fresh machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: fail fast instead of hanging on a network call.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO.parent / "shared" / "prompts"


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Every session builds its tiny models from scratch into its own cache (unless SD_BRIDGE_CACHE is set)."""
    if "SD_BRIDGE_CACHE" not in os.environ:
        os.environ["SD_BRIDGE_CACHE"] = str(tmp_path_factory.mktemp("sd-bridge-cache"))
    # Benchmark functions that tests call write their results here, never over benchmarks/results/.
    os.environ["SD_BRIDGE_RESULTS"] = str(tmp_path_factory.mktemp("results"))
    return Path(os.environ["SD_BRIDGE_CACHE"])


@pytest.fixture(scope="session")
def prompts_dir() -> Path:
    assert PROMPTS.is_dir(), f"the shared prompt corpus is expected at {PROMPTS}"
    return PROMPTS


def accelerate_launch(processes: int = 2) -> list[str]:
    """`accelerate launch` for N CPU processes: its torchrun launcher (--multi_gpu) talks gloo on CPU."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch_chromium(playwright):
    """Debian's Chromium, headless, with the flags this closed network needs (no browser download)."""
    import shutil

    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is needed (make test installs it)"
    return playwright.chromium.launch(executable_path=exe, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def read_jsonl(path: Path) -> list[dict]:
    import json

    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
