"""One run at a time on one output (issue #41): a second run is refused with one line naming the first one's pid,
before it writes anything; a lock whose run died is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bridge.cli import main
from bridge.files import OutputBusyError, OutputLock

HOLD = """
import sys, time
from bridge.files import OutputLock
with OutputLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold(out):
    """A process that holds OUT's lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_lock_on_one_output_is_refused_and_the_file_goes_at_the_end(tmp_path):
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        assert (tmp_path / "out.jsonl.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
            with OutputLock(out):
                pass
    assert not (tmp_path / "out.jsonl.lock").exists()
    with OutputLock(out):  # free again
        pass


def test_a_killed_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "dir"
    proc = hold(out)
    with pytest.raises(OutputBusyError, match=f"pid {proc.pid}"):
        with OutputLock(out):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "dir.lock").exists()  # left behind by SIGKILL, but no longer held
    with OutputLock(out):
        assert (tmp_path / "dir.lock").read_text().strip() == str(os.getpid())


def test_a_command_on_a_busy_output_is_one_line_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "p.txt"
    src.write_text("a cat\na dog\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    proc = hold(out)
    try:
        assert main(["migrate", str(src), "--out", str(out), "--no-progress"]) == 1
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {proc.pid}" in err[0] and "another run" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt.lock", "p.txt"]
    assert main(["migrate", str(src), "--out", str(out), "--no-progress"]) == 0  # the dead run's lock is taken over
    assert out.read_text(encoding="utf-8") == "a cat\na dog\n"


def test_two_migrates_started_together_never_mix(prompts_dir, tmp_path):
    """The red team's case: two migrates into one --out. Before the lock, 2 of 3 trials left 5,030 rows for a
    5,000-row input and both exited 0. Now one is refused and the other's output is the uninterrupted run's."""
    lines = [line for name in ("plain.jsonl", "a1111.jsonl")
             for line in (prompts_dir / name).read_text(encoding="utf-8").splitlines()]
    src = tmp_path / "lib.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    alone = tmp_path / "alone.jsonl"
    assert main(["migrate", str(src), "--out", str(alone), "--no-progress"]) == 0
    out = tmp_path / "both.jsonl"
    cmd = [sys.executable, "-m", "bridge.cli", "migrate", str(src), "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    # Both start at once and take seconds to migrate thousands of rows, so they overlap: one must be refused.
    assert sorted(code for code, _ in results) == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "another run" in refused and len(refused.strip().splitlines()) == 1
    assert out.read_bytes() == alone.read_bytes()
