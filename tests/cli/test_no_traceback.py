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

import pytest

from benchmarks.reliability import hostile_arguments
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


def test_every_command_given_hostile_arguments_says_one_line(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "good.txt").write_text("a crimson circle\na big azure square\n")
    cases = hostile_arguments(tmp_path)
    assert {' '.join(argv[:2]) if argv[0] == 'toyworld' else argv[0] for argv, _ in cases} >= set(COMMANDS) - {"doctor"}  # doctor takes no input and writes nothing
    for argv, message in cases:
        code, lines = _run(argv, capsys)
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
    # 20,000 rows: about 80 chunks of 256, seconds of migration after the first commit, when Ctrl-C comes.
    big.write_text("".join(f"(masterpiece:1.2), a cat number {k}, <lora:x:1>\n" for k in range(20_000)))
    argv = [sys.executable, "-m", "bridge.cli", "migrate", str(big), "--out", str(tmp_path / "out.txt"),
            "--no-progress"]
    # Ctrl-C reaches a foreground process whose SIGINT is at its default. A test run started in the background
    # by a shell without job control (`nohup make test &`) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: the migrate ran to the end with 0, twice. So the child starts with the default.
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    # Wait for the journal, written once the first chunk of rows is committed: the test is about Ctrl-C during
    # the migration itself, not while the command still imports.
    while not (tmp_path / "out.txt.journal").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("sd-bridge migrate: interrupted; rerun the same command: it resumes "
                                            "where it stopped"), err
    assert subprocess.run(argv, capture_output=True).returncode == 0
    assert sum(1 for _ in (tmp_path / "out.txt").open()) == 20_000
