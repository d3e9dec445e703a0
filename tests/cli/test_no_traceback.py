"""No traceback from any command (issue #41): every command, given hostile arguments (an --out that is the wrong
kind of thing, a missing or unreadable input, Ctrl-C), ends with one error line and a non-zero exit, before
it has done or lost any work."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from bridge.cli import COMMANDS, main

HINT = "for every option"  # the usage hint a flag error adds under its one line


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as stop:  # a usage error, raised by the flag parser
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    return code, [line for line in err.splitlines() if line.strip() and HINT not in line and "%|" not in line]


def _hostile(tmp: Path) -> list[tuple[list[str], str]]:
    afile, adir, good, missing = tmp / "afile", tmp / "adir", tmp / "good.txt", tmp / "missing.txt"
    return [
        (["demo", "--out", str(afile)], "is a file; this command writes a directory"),
        (["gather", "--prompts", str(missing), "--out", str(tmp / "g")], "not found"),
        (["gather", "--prompts", str(good), "--out", str(afile)], "is a file; this command writes a directory"),
        (["translate", "--adapter", str(missing), "a cat"], "adapter directory not found"),
        (["translate", "--network-map", str(missing), "a cat"], "network map not found"),
        (["translate", "--network-map", str(adir), "a cat"], str(adir)),
        (["migrate", str(missing), "--out", str(tmp / "m.txt")], "input not found"),
        (["migrate", str(good), "--out", str(adir)], "is a directory; a txt library is migrated into a file"),
        (["serve", "--adapter", str(missing)], "adapter directory not found"),
        (["serve", "--reference", str(missing)], "is not a reference index"),
        (["train", "--data", str(missing), "--out", str(tmp / "t")], "is not a gathered dataset"),
        (["train", "--data", str(adir), "--out", str(afile)], "is a file; this command writes a directory"),
        (["eval", "--prompts", str(missing), "--out", str(tmp / "e")], "prompt source not found"),
        (["eval", "--prompts", str(good), "--out", str(afile)], "is a file; this command writes a directory"),
        (["toyworld build", "--out", str(afile)], "is a file; this command writes a directory"),
        (["toyworld prompts", "--out", str(adir)], "is a directory; this command writes a file"),
        (["toyworld sheet", "--out", str(afile)], "must name an image file"),
        (["toyworld sheet", "--out", str(adir / "x.png"), "--prompts", "a dragon in the snow"], "not a word"),
        (["sweep", "--prompts", str(missing), "--out", str(tmp / "s")], "prompt source not found"),
        (["sweep", "a cat", "--out", str(afile)], "is a file; this command writes a directory"),
        (["index", str(missing), "--out", str(tmp / "i")], "does not exist"),
        (["index", str(adir), "--out", str(afile)], "is a file; this command writes a directory"),
        (["export", str(missing), "--out", str(tmp / "x")], "not an sd-bridge adapter directory"),
        (["export", str(adir), "--out", str(tmp / "x")], "not an sd-bridge adapter directory"),
        (["inspect", "--network-map", str(missing), "a cat"], "network map not found"),
    ]


def test_every_command_given_hostile_arguments_says_one_line(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "good.txt").write_text("a crimson circle\na big azure square\n")
    cases = _hostile(tmp_path)
    assert {argv[0] for argv, _ in cases} >= set(COMMANDS) - {"doctor"}  # doctor takes no input and writes nothing
    for argv, message in cases:
        code, lines = _run(argv.pop(0).split() + argv, capsys)
        assert code not in (0, None) and len(lines) == 1 and message in lines[0], (argv, code, lines)
    assert (tmp_path / "afile").read_text() == "mine\n" and list((tmp_path / "adir").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "good.txt"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_ctrl_c_in_any_command_is_one_line_and_exit_130(name, monkeypatch, tmp_path, capsys):
    """Ctrl-C is KeyboardInterrupt wherever the command is; `migrate` printed a 58-line traceback."""
    module, _, function, _ = COMMANDS[name]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    # Flags parsed to a config whose output is a fresh directory: the run function is what is interrupted.
    monkeypatch.setattr("bridge.cli.parse_config", lambda *a, **k: types.SimpleNamespace(out=tmp_path / "o"))
    code, lines = _run(name.split(), capsys)
    assert code == 130 and len(lines) == 1 and lines[0].startswith(f"sd-bridge {name}: interrupted"), (name, lines)


@pytest.mark.slow
def test_a_real_sigint_during_migrate_is_one_line_and_the_rerun_finishes(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"(masterpiece:1.2), a cat number {k}, <lora:x:1>\n" for k in range(100_000)))
    argv = [sys.executable, "-m", "bridge.cli", "migrate", str(big), "--out", str(tmp_path / "out.txt"),
            "--no-progress"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while not list(tmp_path.glob("out.txt*")) and time.time() < deadline:  # it has started writing
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("sd-bridge migrate: interrupted; rerun the same command: it resumes "
                                            "where it stopped"), err
    assert subprocess.run(argv, capture_output=True).returncode == 0
    assert sum(1 for _ in (tmp_path / "out.txt").open()) == 100_000
