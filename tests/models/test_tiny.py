"""Tiny presets: built offline, saved with save_pretrained, reloaded through the hub loader, deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bridge.models import loading, presets
from bridge.models.render import Renderer, derive_seed
from bridge.models.score import Scorer, cosine


@pytest.fixture(scope="module")
def renderers():
    return {name: Renderer(presets.pipeline(name)) for name in ("tiny-sd15", "tiny-sd2")}


def test_tiny_models_are_saved_as_safetensors_and_reload(tiny_cache):
    for kind, name in [("pipeline", "tiny-sd15"), ("pipeline", "tiny-sd2"), ("scorer", "tiny-clip"),
                       ("rewriter", "tiny-t5")]:
        path = loading.model_dir(presets.get_preset(kind, name))
        assert path.is_relative_to(tiny_cache)
        weights = list(path.rglob("*.safetensors"))
        assert weights, f"{name} has no safetensors"
        assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pt")), f"{name} wrote pickled weights"


def test_same_seed_same_pixels_and_batch_independent(renderers):
    r = renderers["tiny-sd15"]
    prompts = ["a red fox in snow", "portrait of an old sailor, oil painting"]
    seeds = [derive_seed(0, p, 0) for p in prompts]
    first = r(prompts, seeds, batch_size=2)
    again = r(prompts, seeds, batch_size=1)  # other batch composition, same images
    for a, b in zip(first, again):
        np.testing.assert_allclose(np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16), atol=1)
    other = r(prompts[:1], [seeds[0] + 1])[0]
    assert np.abs(np.asarray(other, dtype=np.int16) - np.asarray(first[0], dtype=np.int16)).mean() > 1


def test_fresh_load_renders_the_same_pixels(renderers):
    prompt, seed = "lighthouse at dusk", 1234
    a = renderers["tiny-sd2"]([prompt], [seed])[0]
    b = Renderer(presets.pipeline("tiny-sd2"))([prompt], [seed])[0]  # a second, independent load
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tiny_sd2_differs_from_tiny_sd15_where_sd2_does(renderers):
    sd1, sd2 = renderers["tiny-sd15"].pipe, renderers["tiny-sd2"].pipe
    assert sd1.scheduler.config.prediction_type == "epsilon"
    assert sd2.scheduler.config.prediction_type == "v_prediction"
    assert sd2.unet.config.use_linear_projection and not sd1.unet.config.use_linear_projection
    assert sd1.text_encoder.config.hidden_size == sd1.unet.config.cross_attention_dim == 32
    assert sd2.text_encoder.config.hidden_size == sd2.unet.config.cross_attention_dim == 48
    assert sd2.tokenizer.pad_token == "!" and sd1.tokenizer.pad_token == "<|endoftext|>"
    # The rendering path keeps each model's prediction type when it swaps in the preset's sampler.
    assert type(sd2.scheduler).__name__ == "DPMSolverMultistepScheduler"
    # An SD1.5 text embedding does not fit the SD2 UNet: shape assumptions fail loudly.
    import torch

    emb = sd1.text_encoder(sd1.tokenizer(["x"], return_tensors="pt").input_ids)[0]
    with pytest.raises(RuntimeError):
        sd2.unet(torch.zeros(1, 4, 32, 32), 1, encoder_hidden_states=emb)


def test_pipeline_tokenizers_are_the_real_clip_vocabulary(renderers):
    import open_clip

    from bridge.syntax.tokens import clean

    tok = renderers["tiny-sd2"].pipe.tokenizer
    text = "a majestic lion, trending on artstation, by greg rutkowski"
    assert len(tok) == 49408
    assert tok(clean(text), add_special_tokens=False).input_ids == open_clip.get_tokenizer("ViT-H-14").encode(text)


def test_tiny_clip_is_open_clip_and_scores(renderers):
    scorer = Scorer(presets.scorer("tiny-clip"))
    imgs = renderers["tiny-sd15"](["a cat", "a dog"], [1, 2])
    emb = scorer.embed_images(imgs)
    assert emb.shape == (2, 32)
    np.testing.assert_allclose(emb.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    same = cosine(emb, emb)
    assert all(abs(s - 1.0) < 1e-5 for s in same)
    assert scorer.embed_texts(["a cat"]).shape == (1, 32)
    cfg = json.loads((loading.model_dir(presets.scorer("tiny-clip")) / "open_clip_config.json").read_text())
    assert "model_cfg" in cfg  # open_clip's hub layout, loaded through `local-dir:`


def test_tiny_t5_tokenizer_is_trained_not_random():
    model, tok = loading.load_rewriter(presets.rewriter("tiny-t5"))
    assert type(tok).__name__ == "T5Tokenizer"
    text = "portrait of a knight, highly detailed, digital painting"
    ids = tok(text).input_ids
    assert ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids
    # A trained unigram vocabulary covers frequent prompt words with few pieces.
    assert len(ids) < len(text.split()) * 2
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert model.config.vocab_size == len(tok)
