"""Loading: one clear message for a model that is not available offline; caller-chosen device/dtype."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bridge.models import loading, presets


@pytest.mark.parametrize("kind, name", [("pipeline", "sd15"), ("scorer", "vit-h-14"), ("rewriter", "flan-t5-base")])
def test_missing_model_error_names_preset_hub_id_and_remedies(kind, name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    preset = presets.get_preset(kind, name)
    with pytest.raises(loading.ModelNotAvailableError) as exc:
        loading.model_dir(preset)
    msg = str(exc.value)
    assert name in msg and preset.hub_id in msg
    assert "HF_HOME" in msg and "network" in msg and "local directory" in msg
    assert not loading.is_available_locally(preset)


def test_cli_reports_missing_model_without_a_traceback(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "SD_BRIDGE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "demo", "--source", "sd15", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_local_directory_is_a_preset(tmp_path):
    path = loading.model_dir(presets.pipeline("tiny-sd2"))
    local = presets.pipeline(str(path))
    assert local.local_path == str(path)
    assert (local.prediction_type, local.size, local.text_dim) == ("v_prediction", 64, 48)
    with pytest.raises(presets.UnknownPresetError, match="not found"):
        presets.pipeline(str(tmp_path / "nothing-here"))
    with pytest.raises(presets.UnknownPresetError, match="sd2-base"):
        presets.pipeline("sd3")


def test_device_and_dtype_are_the_callers_choice():
    assert loading.resolve_device("cpu") == "cpu"
    assert loading.resolve_dtype("auto", "cpu") == torch.float32
    assert loading.resolve_dtype("auto", "cuda", kind="pipeline") == torch.float16
    assert loading.resolve_dtype("auto", "cuda", kind="scorer") == torch.float32
    assert loading.resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        loading.resolve_dtype("fp8", "cpu")
    if not torch.cuda.is_available():
        assert loading.resolve_device("auto") == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            loading.resolve_device("cuda")


def test_importing_bridge_loads_no_models_and_picks_no_device():
    code = ("import sys, bridge.cli, bridge.models.presets, bridge.models.loading, bridge.models.render, "
            "bridge.models.score; print('diffusers' in sys.modules, 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_revision_override_applies_to_hub_presets_only():
    assert presets.pipeline("sd15", revision="abc123").revision == "abc123"
    with pytest.raises(ValueError, match="hub presets only"):
        presets.pipeline("tiny-sd15", revision="abc123")
