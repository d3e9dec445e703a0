"""A1111-style text conditioning on diffusers pipelines."""

from __future__ import annotations

import pytest
import torch

from bridge import presets
from bridge.encode import encode_prompts, weighted_chunks
from bridge.render import Renderer


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
