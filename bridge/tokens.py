"""The real CLIP BPE tokenizer, built offline, and token counting.

SD1.5 (OpenAI CLIP ViT-L/14) and SD2 (OpenCLIP ViT-H/14) share one BPE vocabulary of 49,408 tokens and
see 77 positions: BOS + 75 text tokens + EOS. open_clip ships that vocabulary inside its package
(`bpe_simple_vocab_16e6.txt.gz`), so `clip_tokenizer()` builds the same `transformers.CLIPTokenizer` that
the hub pipelines carry in their `tokenizer/` folder, with no download.

Counting applies CLIP's own text cleaning first (ftfy + HTML unescape + whitespace, `open_clip.tokenizer`),
as the original CLIP tokenizer does: without it curly quotes and mojibake count as extra tokens.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import ftfy

_WHITESPACE = re.compile(r"\s+")

CONTEXT_LENGTH = 77  # positions the text encoder sees
CHUNK_TOKENS = CONTEXT_LENGTH - 2  # text tokens per chunk, BOS/EOS excluded
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bpe_file() -> Path:
    # Located without importing open_clip (its import pulls in timm and takes seconds).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (OpenAI CLIP `simple_tokenizer.py`)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Same slicing as open_clip.SimpleTokenizer / OpenAI CLIP: 49152 - 256 - 2 merges.
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(pad_token: str = EOS):
    """A fresh CLIPTokenizer with the real vocabulary. SD1.5 pads with EOS, SD2 with "!" (id 0)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=CONTEXT_LENGTH)


def clean(text: str) -> str:
    """CLIP's text cleaning (OpenAI CLIP / open_clip `basic_clean` + `whitespace_clean`): ftfy, HTML
    unescaped twice, whitespace collapsed. Tested equal to open_clip's token counts on the corpus."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip()


@lru_cache(maxsize=4)
def clip_tokenizer():
    """The shared CLIP tokenizer for counting (built once per process, ~0.2 s)."""
    return build_clip_tokenizer()


def count_tokens(text: str, tokenizer=None) -> int:
    """Text tokens (BOS/EOS excluded) that `text` costs in a CLIP text encoder."""
    if not text.strip():
        return 0
    tok = tokenizer if tokenizer is not None else clip_tokenizer()
    return len(tok(clean(text), add_special_tokens=False, verbose=False)["input_ids"])


def count_tokens_batch(texts: list[str], tokenizer=None) -> list[int]:
    tok = tokenizer if tokenizer is not None else clip_tokenizer()
    cleaned = [clean(t) for t in texts]
    ids = tok(cleaned, add_special_tokens=False, verbose=False)["input_ids"] if cleaned else []
    return [len(x) if t.strip() else 0 for x, t in zip(ids, texts)]


def token_budget(nodes, truncates: bool, tokenizer=None) -> tuple[list[int], list]:
    """Text tokens per chunk (AND parts in order, each split at BREAK) and warnings for chunks over 75.

    A1111 encodes a long chunk as several 75-token chunks; plain diffusers (truncates=True) drops the
    tokens past 75 without a word. Embeddings are counted by their name's tokens (their real vector
    count lives in the embedding file).
    """
    from bridge.prompt import PromptWarning, chunk_texts

    chunks = [chunk for part in chunk_texts(nodes) for chunk in part]
    counts = count_tokens_batch(chunks, tokenizer)
    warnings = []
    for k, count in enumerate(counts):
        if count > CHUNK_TOKENS:
            if truncates:
                msg = (f"chunk {k + 1} has {count} tokens; the target reads {CHUNK_TOKENS} per prompt and "
                       f"silently ignores the last {count - CHUNK_TOKENS}")
            else:
                msg = f"chunk {k + 1} has {count} tokens; it is encoded as {-(-count // CHUNK_TOKENS)} chunks"
            warnings.append(PromptWarning("token-budget", msg))
    return counts, warnings
