"""The `sd-bridge` command: help, doctor, and the demo (the README's main job) inside the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from bridge.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "doctor"):
        assert name in out
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("sd-bridge")
    assert exe, "the sd-bridge console script is not on PATH"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "doctor" in proc.stdout


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["presets"]["tiny-sd2"]["local"] is True
    assert report["presets"]["sd15"]["local"] is False  # offline, nothing cached
    assert report["versions"]["torch"]
    assert report["caches"]["sd_bridge"] == os.environ["SD_BRIDGE_CACHE"]


def test_demo_writes_side_by_side_summary_and_config(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--num-prompts", "2", "--seeds", "2"]) == 0
    assert "side-by-side:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["prompts"]) == 2 and summary["renders"] == 8
    assert all(-1.0 <= p["agreement"] <= 1.0 for p in summary["prompts"])
    from PIL import Image

    sheet = Image.open(out / "side_by_side.png")
    assert sheet.width == 4 * 128  # source | target per seed
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["num_prompts"] == 2
    assert config["presets"]["target"]["prediction_type"] == "v_prediction"


def test_demo_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["demo", "--out", str(out), "--num-prompts", "1", "--seeds", "1"]) == 0
    assert (a / "side_by_side.png").read_bytes() == (b / "side_by_side.png").read_bytes()


def test_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--seeds", "0"])
    assert exc.value.code == 2
    assert "seeds must be >= 1" in capsys.readouterr().err
