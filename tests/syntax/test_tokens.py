"""The offline CLIP tokenizer counts exactly what open_clip's tokenizer counts, on the real corpus."""

from __future__ import annotations

from functools import lru_cache

import open_clip
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.syntax.tokens import CHUNK_TOKENS, build_clip_tokenizer, clean, clip_tokenizer, count_tokens
from conftest import read_jsonl


@lru_cache(maxsize=1)
def transformers_tokenizer():
    return build_clip_tokenizer()


def test_counts_equal_open_clip_on_every_shared_prompt(prompts_dir):
    reference = open_clip.get_tokenizer("ViT-H-14")
    prompts = [r["prompt"] for name in ("plain.jsonl", "a1111.jsonl") for r in read_jsonl(prompts_dir / name)]
    counts = [count_tokens(p) for p in prompts]
    mismatches = [(p, c, len(reference.encode(p))) for p, c in zip(prompts, counts) if c != len(reference.encode(p))]
    assert not mismatches, mismatches[:3]
    assert len(prompts) == 5347


def test_count_basics():
    assert count_tokens("") == 0
    assert count_tokens("   ") == 0
    assert count_tokens("cat") == 1
    assert count_tokens("“curly quotes”") == count_tokens('"curly quotes"')  # ftfy cleaning, as CLIP does
    assert CHUNK_TOKENS == 75


# Prompt-like text: letters from several scripts, digits, weights and brackets, emoji, combining marks.
PROMPTISH = st.text(st.sampled_from(list("abcxyzABC éüßñ日本語한국 ,.:;()[]{}<>|'\"!?-_/\\0123456789²½😀\u0301\t\n")),
                    max_size=80)


@settings(max_examples=300, deadline=None)
@given(PROMPTISH)
def test_pieces_equal_transformers_clip_tokenizer(text):
    """The pure-Python BPE (no transformers, for a fast start) splits exactly as transformers' CLIPTokenizer."""
    text = clean(text)
    assert clip_tokenizer().pieces(text) == (transformers_tokenizer().tokenize(text) if text else [])


def test_special_tokens_and_a_long_word_equal_transformers():
    text = clean("a <|endoftext|> cat " + "supercalifragilistic" * 150)
    assert clip_tokenizer().pieces(text) == transformers_tokenizer().tokenize(text)
