"""The real CLIP BPE tokenizer, built offline, and token counting.

SD1.5 (OpenAI CLIP ViT-L/14) and SD2 (OpenCLIP ViT-H/14) share one BPE vocabulary of 49,408 tokens and
see 77 positions: BOS + 75 text tokens + EOS. open_clip ships that vocabulary inside its package
(`bpe_simple_vocab_16e6.txt.gz`). Two tokenizers are built from it, with no download:

- `ClipBPE` counts tokens in pure Python (regex + ftfy), so `inspect`, `translate` and `migrate` without an
  adapter never import torch or transformers and start in well under a second (issue #13);
- `build_clip_tokenizer()` builds the `transformers.CLIPTokenizer` that the hub pipelines carry in their
  `tokenizer/` folder, for the tiny and toy pipelines that need ids.

Counting applies CLIP's own text cleaning first (ftfy + HTML unescape + whitespace, `open_clip.tokenizer`),
as the original CLIP tokenizer does: without it curly quotes and mojibake count as extra tokens.
"""

from __future__ import annotations

import gzip
import heapq
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import regex

from bridge.syntax.a1111 import BREAK, DEFAULT_STEPS, calls_with_distinct_text, runs_at

_WHITESPACE = regex.compile(r"\s+")

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


def _clip_vocab_and_merges(path: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Same slicing as open_clip.SimpleTokenizer / OpenAI CLIP: 49152 - 256 - 2 merges.
    lines = gzip.open(path or _bpe_file()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
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


# CLIP's pre-tokenizer (OpenAI CLIP `simple_tokenizer.py`, open_clip `SimpleTokenizer`, transformers
# `CLIPTokenizer`): the special tokens whole, English contractions, runs of letters, single digits, runs of
# other non-space characters. `regex` gives the Unicode classes \p{L}/\p{N} that `re` lacks.
_PRE_TOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


class ClipBPE:
    """CLIP's byte-level BPE in pure Python: the same pieces as `CLIPTokenizer`, without transformers.

    Each pre-token is spelt in CLIP's printable byte alphabet, its last character marked end-of-word
    (`</w>`), and adjacent symbols are merged by rank. The reference loop (open_clip `SimpleTokenizer.bpe`)
    rescans the whole word once per merge, which is quadratic: a 100k-letter "word" in a hostile prompt
    would stall a migrate. Here a heap of (rank, position) over a linked list of symbols gives the same
    merges in O(n log n): ranks come from a learned table, so every pair a merge creates ranks after the
    pair merged, and popping (rank, leftmost position) replays the reference's order exactly.
    """

    def __init__(self, ranks: dict[tuple[str, str], int]):
        self.ranks = ranks
        self.byte_chars = _bytes_to_unicode()
        self._word = lru_cache(maxsize=65536)(self._merge)

    @classmethod
    def from_vocab_file(cls, path: Path | None = None) -> ClipBPE:
        _, merges = _clip_vocab_and_merges(path)
        return cls({pair: rank for rank, pair in enumerate(merges)})

    def pieces(self, text: str) -> list[str]:
        """BPE pieces of already-cleaned text, lower-cased as CLIP does."""
        out = []
        for token in _PRE_TOKENIZE.findall(text.lower()):
            if token in (BOS, EOS):
                out.append(token)
                continue
            word = "".join(self.byte_chars[b] for b in token.encode("utf-8"))
            out.extend(self._word(word) if len(word) <= 64 else self._merge(word))
        return out

    def count(self, text: str) -> int:
        return len(self.pieces(text))

    def _merge(self, word: str) -> tuple[str, ...]:
        symbols: list[str | None] = list(word[:-1]) + [word[-1] + "</w>"]
        nxt = list(range(1, len(symbols))) + [-1]
        prev = list(range(-1, len(symbols) - 1))
        heap = [(r, i) for i in range(len(symbols) - 1)
                if (r := self.ranks.get((symbols[i], symbols[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if symbols[i] is None or j < 0 or self.ranks.get((symbols[i], symbols[j])) != rank:
                continue  # stale: one side was merged away since this pair was pushed
            symbols[i], symbols[j] = symbols[i] + symbols[j], None
            nxt[i] = nxt[j]
            if nxt[i] >= 0:
                prev[nxt[i]] = i
            for a, b in ((prev[i], i), (i, nxt[i])):
                if a >= 0 and b >= 0 and (r := self.ranks.get((symbols[a], symbols[b]))) is not None:
                    heapq.heappush(heap, (r, a))
        return tuple(s for s in symbols if s is not None)


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipBPE:
    """The shared CLIP tokenizer for counting (built once per process, about 0.1 s, no torch)."""
    return ClipBPE.from_vocab_file()


def count_tokens(text: str) -> int:
    """Text tokens (BOS/EOS excluded) that `text` costs in a CLIP text encoder."""
    return clip_tokenizer().count(clean(text)) if text.strip() else 0


COMMA_BACKTRACK = 20  # A1111 opts.comma_padding_backtrack, default 20


def pack_chunks(runs: list, is_comma) -> list[tuple[list, list[float]]]:
    """A1111's chunking (sd_hijack_clip.py `tokenize_line`): `runs` are (tokens, weight) pairs, or None where a
    BREAK or AND closes the chunk. A chunk holds 75 tokens; when a token other than a comma would overflow it
    and a comma lies within the last COMMA_BACKTRACK tokens, the chunk ends after that comma and the tokens
    after it move to the next chunk, so a phrase is not cut in two ("blood splat|ter" stays whole)."""
    chunks: list[tuple[list, list[float]]] = []
    tokens: list = []
    weights: list[float] = []
    last_comma = -1

    def close():
        nonlocal tokens, weights, last_comma
        chunks.append((tokens, weights))
        tokens, weights, last_comma = [], [], -1

    for run in runs:
        if run is None:
            close()
            continue
        run_tokens, weight = run
        for token in run_tokens:
            if is_comma(token):
                last_comma = len(tokens)
            elif len(tokens) == CHUNK_TOKENS and last_comma != -1 and len(tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved, moved_weights = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = moved, moved_weights
            if len(tokens) == CHUNK_TOKENS:
                close()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def token_runs(runs: list, tokenize) -> list:
    """The input of `pack_chunks` from `bridge.syntax.a1111` runs: each (text, weight) run as (tokenize(cleaned text),
    weight); None at a BREAK and between AND parts. A BREAK that brackets multiplied (`(b BREAK c)`, weight
    -1.1) is no break to A1111: it encodes the word "break", and so does this."""
    return [None if run is None or run == BREAK
            else (tokenize(clean(run[0])) if run[0].strip() else [], run[1]) for run in runs]


def _piece_runs(text: str, negative: bool, steps: int) -> list:
    """The runs of the step whose text costs the most tokens: A1111's token counter shows that maximum over a
    prompt's schedule, and the longest step is the one a chunk or budget limit bites on."""
    pieces = clip_tokenizer().pieces
    best: tuple[int, list] | None = None
    for call in calls_with_distinct_text(text, negative, steps):
        runs = token_runs(runs_at(text, call, negative, steps), pieces)
        total = sum(len(run[0]) for run in runs if run is not None)
        if best is None or total > best[0]:
            best = (total, runs)
    return best[1]


def _between_breaks(runs: list) -> list[int]:
    counts = [0]
    for run in runs:
        if run is None:
            counts.append(0)
        else:
            counts[-1] += len(run[0])
    return counts


def tokens_between_breaks(text: str, negative: bool = False, steps: int = DEFAULT_STEPS) -> list[int]:
    """Tokens of the text between BREAKs (per AND part, in order): what a target that truncates at 75 tokens
    per chunk reads the first 75 of."""
    return _between_breaks(_piece_runs(text, negative, steps))


def a1111_chunks(text: str, negative: bool = False, steps: int = DEFAULT_STEPS) -> list[list[str]]:
    """The CLIP token pieces of each 75-token chunk A1111 encodes `text` into, AND parts one after another."""
    return [tokens for tokens, _ in pack_chunks(_piece_runs(text, negative, steps), _is_comma)]


def _is_comma(piece: str) -> bool:
    return piece == ",</w>"


def token_budget(text: str, truncates: bool, negative: bool = False,
                 steps: int = DEFAULT_STEPS) -> tuple[list[int], list]:
    """Text tokens per chunk as A1111 packs them (`pack_chunks`), and warnings for text between BREAKs that
    needs more than one 75-token chunk.

    A1111 encodes a long text as several 75-token chunks; plain diffusers (truncates=True) drops the tokens
    past 75 without a word. Embeddings are counted by their name's tokens (their real vector count lives in
    the embedding file).
    """
    from bridge.syntax.prompt import PromptWarning

    runs = _piece_runs(text, negative, steps)
    counts = [len(tokens) for tokens, _ in pack_chunks(runs, _is_comma)]
    warnings = []
    parts = _between_breaks(runs)
    for k, count in enumerate(parts):
        if count > CHUNK_TOKENS:
            # A "chunk" in the counts beside this warning is A1111's 75-token chunk; what runs over is the text
            # between BREAKs, so the message says "text", and which renderer loses the rest (issue #43: "chunk 1
            # has 98 tokens" beside counts [73, 26] read as a contradiction).
            what = "the prompt" if len(parts) == 1 else f"part {k + 1} (between BREAKs)"
            if truncates:
                msg = (f"{what} has {count} tokens: plain diffusers encoding reads only its first {CHUNK_TOKENS} and "
                       f"ignores the last {count - CHUNK_TOKENS}; A1111 and ComfyUI read every {CHUNK_TOKENS}-token "
                       "chunk")
            else:
                msg = (f"{what} has {count} tokens; it goes on in another {CHUNK_TOKENS}-token chunk, cut "
                       f"after the last comma within {COMMA_BACKTRACK} tokens (A1111)")
            warnings.append(PromptWarning("token-budget", msg))
    return counts, warnings
