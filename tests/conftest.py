"""Shared fixtures: tiny models only, no hub, a per-session model cache (built once, like a fresh machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: fail fast instead of hanging on a network call.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# `make test` runs two pytest-xdist workers on the 2-core CI machine. Each runs torch, and the commands it
# starts, on one thread: two threads per worker would make four fight over two cores. Set before anything
# imports torch, which reads it once. Most tests are start-up and tiny models, which one thread runs nearly
# as fast as two (tests/project/test_readme.py measures the same for the README's commands).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    """`accelerate launch` for N CPU processes: its torchrun launcher (--multi_gpu) talks gloo on CPU, on a
    port of its own (the default, 29500, is taken when two workers launch at once)."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadfile` hands out whole files in collection order), the files that hold
    slow tests go first, so the two workers do not wait at the end on the one that drew a two-minute test last.
    Order inside a file, and a serial run's order, stay as written."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keep their order
