"""The README and docs/ are true (issue #13): every `sd-bridge` command in their code blocks parses as written, the
ones on tiny and toy models run as written, and the output shown in their console blocks is what the command
prints."""

from __future__ import annotations

import importlib
import re
import shlex
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


def chains(runnable: list[str]) -> list[list[str]]:
    """The commands in groups that share no file: a command joins the group of each earlier one whose `--out` it
    reads (`runs/NAME` or a file name), in README order within a group, so the groups can run side by side."""
    def key(token: str) -> str:
        return "/".join(Path(token).parts[:2]) if token.startswith("runs/") else token

    groups: list[list[str]] = []
    owner: dict[str, list[str]] = {}  # an output's key -> the group that writes it
    for command in runnable:
        argv = shlex.split(command)
        reads = [owner[key(t)] for t in argv if key(t) in owner]
        group = reads[0] if reads else []
        for other in reads[1:]:  # reads two groups' outputs: they become one
            if other is not group:
                group.extend(other)
                groups.remove(other)
        if not reads:
            groups.append(group)
        group.append(command)
        if "--out" in argv:
            owner[key(argv[argv.index("--out") + 1])] = group
    return groups


def test_commands_that_share_a_file_run_in_one_chain():
    got = chains(["sd-bridge gather --out runs/g", "sd-bridge translate x", "sd-bridge train --data runs/g --out runs/a",
                  "sd-bridge eval --adapter runs/a/x --out runs/r", "sd-bridge sweep --out runs/s",
                  "sd-bridge index runs/s/renders --out runs/i"])
    assert [len(g) for g in got] == [3, 1, 2] and got[0][-1].startswith("sd-bridge eval")


@pytest.mark.slow
def test_tiny_and_toy_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """In README order, in a fresh directory laid out like a checkout (`../shared/prompts`, `toyworld`). The
    ones that need real weights, a GPU or `make demo`'s output are only parsed (above). They run in this
    process through `bridge.cli.main`, the console script's own function: a subprocess each added its start-up
    (torch, diffusers, open_clip: about 6 s) fifteen times, half of this test's work
    (tests/cli/test_cli.py runs the installed `sd-bridge` script itself)."""
    from bridge.cli import main

    work = tmp_path / "repo"
    work.mkdir()
    (work / "toyworld").symlink_to(ROOT / "toyworld")
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    # Left out: the app (it serves until stopped), and commands on files that a reader makes first.
    runnable = [c for c in commands() if not REAL.search(c) and not c.startswith("sd-bridge serve")
                and not any(word in c for word in ("DIR", "demo-out", "my_library", "adapter-sd2", "heldout.jsonl"))]
    assert len(runnable) >= 9, runnable
    monkeypatch.chdir(work)
    times = []
    for chain in chains(runnable):
        for command in chain:  # in README order: what follows in a chain reads what came before
            start = time.perf_counter()
            code = main(shlex.split(command)[1:])
            err = capsys.readouterr().err
            assert code == 0, f"{command}\n{err[-2000:]}"
            times.append(f"{time.perf_counter() - start:6.1f}s  {command}")
    with capsys.disabled():  # each command's seconds (shown with pytest -s)
        print("\n" + "\n".join(times))


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
