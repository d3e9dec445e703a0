"""The offline CLIP tokenizer counts exactly what open_clip's tokenizer counts, on the real corpus."""

from __future__ import annotations

import open_clip

from bridge.tokens import CHUNK_TOKENS, clip_tokenizer, count_tokens, count_tokens_batch
from conftest import read_jsonl


def test_counts_equal_open_clip_on_every_shared_prompt(prompts_dir):
    reference = open_clip.get_tokenizer("ViT-H-14")
    prompts = [r["prompt"] for name in ("plain.jsonl", "a1111.jsonl") for r in read_jsonl(prompts_dir / name)]
    counts = count_tokens_batch(prompts)
    mismatches = [(p, c, len(reference.encode(p))) for p, c in zip(prompts, counts) if c != len(reference.encode(p))]
    assert not mismatches, mismatches[:3]
    assert len(prompts) == 5347


def test_count_basics():
    assert count_tokens("") == 0
    assert count_tokens("   ") == 0
    assert count_tokens("cat") == 1
    assert count_tokens("“curly quotes”") == count_tokens('"curly quotes"')  # ftfy cleaning, as CLIP does
    assert CHUNK_TOKENS == 75
    assert clip_tokenizer().model_max_length == 77
