"""The real presets' committed architectures: published parameter counts, the preset their files describe, and
the real code path once at real size (slow)."""

from __future__ import annotations

import json

import pytest

from benchmarks.real_size import PIPELINES, PUBLISHED, REWRITERS, SCORERS
from bridge.models import presets
from bridge.models.architectures import architecture, components, parameter_counts


@pytest.mark.parametrize("name", PIPELINES + SCORERS + REWRITERS)
def test_every_component_has_its_published_parameter_count(name):
    counts = parameter_counts(name)
    for part, n in counts.items():
        assert n == PUBLISHED[(name, part)], (name, part, n)


def test_a_wrong_config_changes_the_count(monkeypatch):
    """The check can fail: SD2's UNet with SD1.5's cross-attention width is another model."""
    import bridge.models.architectures as arch

    real = arch.architecture

    def wrong(name):
        a = real(name)
        a["unet"]["cross_attention_dim"] = 768
        return a

    monkeypatch.setattr(arch, "architecture", wrong)
    assert parameter_counts("sd2-base")["unet"] != PUBLISHED[("sd2-base", "unet")]


@pytest.mark.parametrize("name", PIPELINES)
def test_the_files_describe_the_built_in_preset(tmp_path, name):
    """A snapshot of these configs reads back as the preset: family, native size (768 and v-prediction for
    SD2.1), cross-attention width, as bridge.models.presets reads a downloaded directory."""
    arch = architecture(name)
    for part, filename in (("unet", "config.json"), ("vae", "config.json"), ("scheduler", "scheduler_config.json")):
        (tmp_path / part).mkdir()
        (tmp_path / part / filename).write_text(json.dumps(arch[part]))
    read, real = presets.get_preset("pipeline", str(tmp_path)), presets.pipeline(name)
    for field in ("family", "size", "prediction_type", "text_dim"):
        assert getattr(read, field) == getattr(real, field), field


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="no committed architecture for preset 'sd3'"):
        architecture("sd3")


@pytest.mark.slow
def test_sd2_at_real_size_renders_through_the_real_path(tmp_path):
    """SD2-base built from its configs with random weights, written as its hub repo is, loaded by the same
    loader and rendered with A1111 weighting in one step at 64 px (benchmarks/real_size.py does every preset)."""
    from benchmarks.real_size import build_random, render_once

    row, image = render_once("sd2-base", build_random("sd2-base", tmp_path / "sd2-base"), "cpu")
    assert row["ok"], row
    assert image.size == (64, 64)


def test_components_are_deterministic():
    import torch

    a = components("flan-t5-small", device="cpu")["t5"]
    b = components("flan-t5-small", device="cpu")["t5"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.lm_head.weight is not a.shared.weight  # flan-t5's own output head
