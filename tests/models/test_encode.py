"""A1111-style text conditioning on diffusers pipelines."""

from __future__ import annotations

import pytest
import torch

from bridge.models import presets
from bridge.models.encode import encode_prompts, weighted_chunks
from bridge.models.render import Renderer


@pytest.fixture(scope="module")
def pipe():
    return Renderer(presets.pipeline("tiny-sd2")).pipe


def test_unweighted_prompt_equals_diffusers_own_encoding(pipe):
    ours = encode_prompts(pipe, ["a red fox in the snow"])
    theirs, _ = pipe.encode_prompt("a red fox in the snow", "cpu", 1, False)
    torch.testing.assert_close(ours, theirs)


def test_weights_change_only_their_tokens_and_syntax_is_not_text(pipe):
    chunks = weighted_chunks("a (red:1.5) fox <lora:x:1>", pipe.tokenizer)
    assert len(chunks) == 1
    ids, weights = chunks[0]
    assert weights == [1.0, 1.5, 1.0]
    assert ids == pipe.tokenizer("a red fox", add_special_tokens=False).input_ids


def test_break_and_long_prompts_make_more_chunks(pipe):
    assert len(weighted_chunks("a BREAK b", pipe.tokenizer)) == 2
    long = ", ".join(["detailed"] * 60)
    chunks = weighted_chunks(long, pipe.tokenizer)
    assert [len(c[0]) for c in chunks] == [75, 44]
    z = encode_prompts(pipe, [long, "short"])
    assert z.shape == (2, 154, 48) and torch.isfinite(z).all()


def test_renders_are_independent_of_batch_neighbours():
    import numpy as np

    r = Renderer(presets.pipeline("tiny-sd15"))
    long = ", ".join(["detailed"] * 60)
    together = r(["a cat", long, "a dog"], [1, 2, 3], batch_size=3)
    alone = r(["a cat"], [1])[0]
    # "a cat" is not padded to the long prompt's two chunks: it is batched only with one-chunk prompts.
    diff = np.abs(np.asarray(together[0], dtype=np.int16) - np.asarray(alone, dtype=np.int16)).max()
    assert diff <= 1


def _render_by_hand(r: Renderer, texts_per_call: list[str], seed: int):
    """The reference for prompt editing: the pipeline driven step by step with embeddings built here, one text
    per model call, switched by a diffusers step callback written independently of the Renderer's."""
    pipe, s = r.pipe, r.settings
    neg = encode_prompts(pipe, [""])
    per_call = [encode_prompts(pipe, [t]) for t in texts_per_call]

    def switch(pipeline, i, t, kwargs):
        if i + 1 < len(per_call) and texts_per_call[i + 1] != texts_per_call[i]:
            return {"prompt_embeds": torch.cat([neg, per_call[i + 1]])}
        return {}

    with torch.inference_mode():
        return pipe(prompt_embeds=per_call[0], negative_prompt_embeds=neg, num_inference_steps=s.steps,
                    guidance_scale=s.guidance, height=s.height, width=s.width,
                    generator=[torch.Generator().manual_seed(seed)], callback_on_step_end=switch,
                    callback_on_step_end_tensor_inputs=["prompt_embeds"], output_type="pil").images[0]


@pytest.mark.parametrize("prompt,per_call", [
    # `.5` of 6 steps is step 3: A1111's model calls 0-3 read "a cat" (call <= end step), calls 4-5 "a dog".
    ("[a cat:a dog:0.5]", ["a cat"] * 4 + ["a dog"] * 2),
    # An integer is a step: the same switch written as 3.
    ("[a cat:a dog:3]", ["a cat"] * 4 + ["a dog"] * 2),
    # Alternation: step k reads option (k - 1) % 2, and call c the first step >= c: cat, cat, dog, cat, dog, cat.
    ("[a cat|a dog]", ["a cat", "a cat", "a dog", "a cat", "a dog", "a cat"]),
])
def test_prompt_editing_switches_the_conditioning_at_a1111s_steps(prompt, per_call):
    import numpy as np

    from bridge.models.render import RenderSettings

    preset = presets.pipeline("tiny-sd15")
    r = Renderer(preset, RenderSettings.for_preset(preset, steps=6))
    ours = np.asarray(r([prompt], [7])[0])
    assert np.array_equal(ours, np.asarray(_render_by_hand(r, per_call, 7)))
    # Neither text alone draws it: the switch is what the image shows.
    for alone in ("a cat", "a dog"):
        assert not np.array_equal(ours, np.asarray(r([alone], [7])[0]))
