"""The README and docs/ are true (issue #13): every `sd-bridge` command in their code blocks parses as written, the
ones on tiny and toy models run as written, and the output shown in their console blocks is what the command
prints."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.cli import COMMANDS, split_command
from bridge.config import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "results.md")]
README = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
SD_BRIDGE = Path(sys.executable).with_name("sd-bridge")
REAL = re.compile(r"--(?:preset|source|target|scorer|rewriter) (?!tiny-|toy-)\S+")  # real models: not here


def blocks(lang: str) -> list[list[str]]:
    return [b.splitlines() for b in re.findall(rf"^```{lang}\n(.*?)^```", README, re.S | re.M)]


def commands() -> list[str]:
    """Each `sd-bridge` command of the bash blocks: continuation lines joined, comments dropped."""
    out = []
    for block in blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", "\n".join(block))
        for line in text.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"(uv run )?sd-bridge ", line):
                out.append(line.removeprefix("uv run "))
    return list(dict.fromkeys(out))  # a command shown in two places runs once


def config_of(argv: list[str]):
    name, rest = split_command(argv)
    module, cls, _, _ = COMMANDS[name]
    # Flags, choices and types only: the values' own checks (a dataset that an earlier command makes) run below.
    return build_parser(getattr(importlib.import_module(module), cls), prog=f"sd-bridge {name}").parse_args(rest)


def test_the_readme_has_commands_to_check():
    assert len(commands()) >= 15 and len(blocks("console")) >= 1


@pytest.mark.parametrize("command", commands())
def test_every_command_parses_as_written(command):
    """Flags, choices and values that the command accepts (a typo or `[--flag a|b]` left in exits 2)."""
    config_of(shlex.split(command)[1:])


@pytest.mark.slow
def test_tiny_and_toy_commands_run_as_written(tmp_path):
    """In README order, in a fresh directory laid out like a checkout (`../shared/prompts`, `toyworld`). The
    ones that need real weights, a GPU or `make demo`'s output are only parsed (above)."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "toyworld").symlink_to(ROOT / "toyworld")
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    # Left out: the app (it serves until stopped), and commands on files that a reader makes first.
    runnable = [c for c in commands() if not REAL.search(c) and not c.startswith("sd-bridge serve")
                and not any(word in c for word in ("DIR", "demo-out", "my_library", "adapter-sd2", "heldout.jsonl"))]
    assert len(runnable) >= 9, runnable
    for command in runnable:
        argv = [str(SD_BRIDGE) if SD_BRIDGE.exists() else shutil.which("sd-bridge"), *shlex.split(command)[1:]]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        print(f"{time.perf_counter() - start:6.1f}s  {command}")  # shown with pytest -s: the README's times


@pytest.mark.parametrize("block", blocks("console"), ids=lambda b: b[0][:40])
def test_console_blocks_show_what_the_command_prints(block):
    """Each shown line appears in the output, in order; `...` stands for lines left out."""
    command = block[0].removeprefix("$ ").removeprefix("uv run ")
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", *shlex.split(command)[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    printed = (proc.stdout + proc.stderr).splitlines()
    at = 0
    for shown in block[1:]:
        if shown == "...":
            continue
        assert shown in printed[at:], f"README shows {shown!r}; the command printed:\n" + "\n".join(printed)
        at = printed.index(shown, at) + 1
