"""The learned rewriter: a seq2seq model (flan-t5 family) that rewrites prompt *leaf text*.

Only text leaves are rewritten (DESIGN §3: translate only leaf text); weights, tags, BREAK/AND, editing,
alternation and escapes stay in the tree around them, so every output is a valid prompt with the user's
structure. Leaves without letters (", ", " ") are never sent to the model.

The model sees the whole prompt (format "marked"): its text leaves in order, each after its number,
`[1] masterpiece [2] a red fox in snow [3] by greg rutkowski`, and answers in kind, one output per leaf,
so every leaf is rewritten in the context of the others and a leaf may grow (text the target needs is
added where it reads best). A prompt with a single leaf is sent as plain text: the marker would say
nothing. An answer whose markers do not read back as [1]..[n] in order is a structure failure (fallback).
Adapters trained before this format rewrite each leaf alone (format "leaf", deduplicated across prompts).

Format "flat" (what `sd-bridge train` writes unless told otherwise) shows the model the prompt's words without
the syntax, `masterpiece, a red fox in snow by greg rutkowski` for `(masterpiece:1.2), a (red:1.1) fox in snow
[by greg rutkowski]`, as the model reads any caption, and puts its answer back into the leaves by a word
alignment (`unflatten`): a kept word stays in its leaf, a replaced word takes its source's leaf, a moved run of
words goes back to its own leaf, an added word joins the leaf before it. A weighted word rewritten in place keeps
its weight ("(crimson:1.2)" -> "(red:1.2)") with no marker for the model to learn; an answer the alignment
cannot place (a leaf left empty) is a structure failure.

This module holds what training and serving share: the task prefix, batched generation, the repair of a
generated leaf, and the adapter metadata file that ties a LoRA adapter to its base rewriter preset.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

PREFIX = "Rewrite this Stable Diffusion 1.5 prompt for Stable Diffusion 2: "
NEGATIVE_PREFIX = "Rewrite this Stable Diffusion 1.5 negative prompt for Stable Diffusion 2: "
FORMATS = ("marked", "leaf", "flat")
BATCH_TOKENS = 3072  # padded input tokens per greedy batch (see _token_groups)
_MARKER = re.compile(r"\s*\[(\d+)\]\s*")
ADAPTER_META = "sd_bridge_adapter.json"
TRAIN_PROMPTS = "train_prompts.json"  # sha256 of every training prompt, so eval can refuse leakage
CURVES = "learning_curves.png"  # reward per step and held-out agreement at checkpoints, beside the adapter
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_STRUCTURE_WORDS = re.compile(r"\b(BREAK|AND)\b")
_TAG = re.compile(r"<[^>]*>")


def needs_rewrite(text: str) -> bool:
    """Leaves with at least one letter go to the model; punctuation and whitespace are kept as they are."""
    return bool(_LETTER.search(text))


def repair_leaf(text: str) -> str:
    """Make generated text safe to put back as a leaf: no structure words, no tags, one line.

    Brackets are escaped later by `Text.value`; BREAK/AND would split chunks or prompts, so they are
    lowercased; `<…>` would read as an extra-network tag, so it is removed; ":" and "|" are left to the
    structure check in the translator (they only matter inside brackets).
    """
    text = _TAG.sub("", text.replace("\n", " "))
    return _STRUCTURE_WORDS.sub(lambda m: m.group().lower(), text).replace("<", "").replace(">", "")


@dataclass
class AdapterMeta:
    """Written by training beside a peft adapter; read by `Translator.from_pretrained`."""

    rewriter: str  # rewriter preset name (or local directory) of the base model
    rewriter_revision: str
    source: str
    target: str
    prefix: str = PREFIX
    max_new_tokens: int = 96
    format: str = "marked"  # what the model reads and writes (module docstring): marked, flat; "leaf" for older ones
    rewrite_negative: bool = False  # negative prompts are rewritten too (with NEGATIVE_PREFIX)
    negative_prefix: str = NEGATIVE_PREFIX
    extra: dict = field(default_factory=dict)

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / ADAPTER_META
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> "AdapterMeta":
        path = Path(directory) / ADAPTER_META
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not an sd-bridge adapter directory (no {ADAPTER_META}); "
                                    "train one with `sd-bridge train`")
        data = read_json(path, "an adapter's metadata")
        data.setdefault("format", "leaf")  # written before the whole-prompt format existed
        if data["format"] not in FORMATS:
            raise ValueError(f"{path}: unknown rewrite format {data['format']!r} (known: {', '.join(FORMATS)})")
        for name, kind in _META_TYPES.items():  # a hand-edited file is refused here, not by a traceback later
            if name in data and not isinstance(data[name], kind) or name in _META_REQUIRED and name not in data:
                raise ValueError(f"{path}: {name} must be {kind.__name__}, got {data.get(name)!r:.60}")
        if not 1 <= data.get("max_new_tokens", 96) <= 4096 or isinstance(data.get("max_new_tokens"), bool):
            raise ValueError(f"{path}: max_new_tokens must be 1..4096, got {data['max_new_tokens']!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


_META_TYPES = {"rewriter": str, "rewriter_revision": str, "source": str, "target": str, "prefix": str,
               "negative_prefix": str, "format": str, "max_new_tokens": int, "rewrite_negative": bool, "extra": dict}
_META_REQUIRED = ("rewriter", "rewriter_revision", "source", "target")
# The largest header safetensors itself reads (MAX_HEADER_SIZE in its Rust source); bytes per element by dtype.
_SAFETENSORS_HEADER_MAX = 100_000_000
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, or a one-line ValueError naming the file (a nested bomb too)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not {what} (bad JSON: {str(err)[:80] or type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not {what} (a JSON {type(data).__name__}, not an object)")
    return data


def check_safetensors(path: Path) -> dict:
    """The tensor table of a safetensors file ({name: {dtype, shape, data_offsets}}), checked against the file
    before any library maps it: the header length fits the file and safetensors' own limit, every tensor's
    bytes lie inside the data and match its dtype and shape, and no two overlap. A truncated file, a header
    bomb, a pickle or a text file under that name each fail here with one line instead of a SafetensorError.
    The layout is the format's own (github.com/huggingface/safetensors, "Format")."""
    import os
    import stat

    bad = f"{path} is not a valid safetensors file"
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{bad}: not a regular file")
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= n <= min(_SAFETENSORS_HEADER_MAX, st.st_size - 8):
                raise ValueError(f"{bad}: its header length ({n}) does not fit the file ({st.st_size} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError):
        raise ValueError(f"{bad}: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: its header is not a JSON object")
    size, spans, tensors = st.st_size - 8 - n, [], {k: v for k, v in header.items() if k != "__metadata__"}
    for name, t in tensors.items():
        ok = (isinstance(t, dict) and t.get("dtype") in _DTYPE_BYTES and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"]))
        if not ok:
            raise ValueError(f"{bad}: tensor {name[:60]!r} has a malformed entry")
        lo, hi = t["data_offsets"]
        numel = 1
        for d in t["shape"]:
            numel *= d
        if not 0 <= lo <= hi <= size or hi - lo != numel * _DTYPE_BYTES[t["dtype"]]:
            raise ValueError(f"{bad}: tensor {name[:60]!r} lies outside the file or does not match its shape "
                             "(a truncated file?)")
        spans.append((lo, hi))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"{bad}: two tensors share bytes")
    return tensors


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()


def save_train_prompts(directory: Path | str, prompts: Sequence[str]) -> Path:
    """Record which prompts an adapter was trained on (hashes only: the adapter may be shared, the data not)."""
    hashes = sorted({prompt_hash(p) for p in prompts})
    path = Path(directory) / TRAIN_PROMPTS
    path.write_text(json.dumps({"hash": "sha256 of the stripped prompt", "count": len(hashes), "sha256": hashes})
                    + "\n", encoding="utf-8")
    return path


def train_prompt_hashes(directory: Path | str) -> set[str] | None:
    """The hashes an adapter recorded, or None for an adapter trained before they were recorded."""
    path = Path(directory) / TRAIN_PROMPTS
    return set(json.loads(path.read_text(encoding="utf-8"))["sha256"]) if path.is_file() else None


def generate(model, tokenizer, texts: Sequence[str], prefix: str = PREFIX, num_candidates: int = 1,
             sample: bool = False, seed: int = 0, max_new_tokens: int = 96, batch_size: int = 32,
             temperature: float = 1.0, return_ids: bool = False, size_from_input: bool = True,
             batch_tokens: int | None = BATCH_TOKENS) -> list[list]:
    """Rewrite each text; `num_candidates` outputs per text (greedy/beam when not sampling, so deterministic).

    Inputs are sorted by length and batched, so padding is small; outputs come back in input order.
    Greedy and beam batches also hold at most `batch_tokens` padded input tokens (rows x longest x
    candidates), so a few long A1111 prompts do not pad a whole batch of 32 to their length; sampled batches
    keep `batch_size` rows, because a batch's seed decides its samples.
    Sampling draws from a private RNG stream seeded with `seed` (the global torch RNG is untouched).
    With `return_ids`, each output is `(text, ids)`: the generated token ids themselves, up to and with the
    EOS when there is one (training scores exactly these; decoded text can re-encode to other ids).
    With `size_from_input` the limit of a batch grows with its longest input (`max_new_tokens` is then the
    floor); without it `max_new_tokens` is a hard cap.
    `model` is a transformers seq2seq model (a peft one included) or an exported engine (`bridge.models.engine`), which
    gets every batch at once with its limit and seed.
    """
    if not texts:
        return []
    if batch_tokens and not sample:
        groups = _token_groups(tokenizer, [prefix + t for t in texts], batch_size, batch_tokens // num_candidates)
    else:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches, start = [], 0
    for idx in groups:
        limit = max_new_tokens
        # Room for the longest input of the batch rewritten at twice its length: a fixed cap cut 1.1% of
        # real leaves short. `max_new_tokens` is the floor.
        if size_from_input:
            longest = max(len(tokenizer(texts[i], add_special_tokens=False).input_ids) for i in idx)
            limit = max(max_new_tokens, 2 * longest + 8)
        batches.append((idx, [prefix + texts[i] for i in idx], limit, seed + start))
        start += len(idx)
    # An exported engine (bridge.models.engine) takes all batches at once and runs them in parallel.
    if hasattr(model, "generate_batches"):
        rows = model.generate_batches(tokenizer, [b[1:] for b in batches], num_candidates, sample, temperature,
                                      prefix=prefix)
    else:
        rows = [_torch_generate(model, tokenizer, batch, limit, num_candidates, sample, batch_seed, temperature)
                for _, batch, limit, batch_seed in batches]
    outputs: list[list] = [[] for _ in texts]
    for (idx, *_), batch_rows in zip(batches, rows):
        decoded = tokenizer.batch_decode(batch_rows, skip_special_tokens=True)
        for j, i in enumerate(idx):
            span = range(j * num_candidates, (j + 1) * num_candidates)
            outputs[i] = [(decoded[k].strip(), batch_rows[k]) if return_ids else decoded[k].strip() for k in span]
    return outputs


def _token_groups(tokenizer, inputs: list[str], batch_size: int, budget: int) -> list[list[int]]:
    """Indices of `inputs` in batches of at most `batch_size` rows and `budget` padded tokens, sorted by
    encoded length; an input longer than the budget is a batch of its own.

    Why: the encoder and cross-attention cost grows with the padded batch, rows x longest. Batches of 32 by
    length alone put the longest A1111 prompts of a library (up to 512 tokens) with 31 shorter ones: measured
    with a flan-t5-base-shaped int8 ctranslate2 rewriter on 256 real prompts (2 CPU cores, 48 new tokens), the
    last batch of 32 took 21 s of the 41 s, and capping batches at 3,072 tokens ran 10.1 prompts/s against
    6.2. fp32 transformers gains too (flan-t5-small shape, 1,000 prompts: 6.79 against 6.28 prompts/s); 2,048
    to 8,192 measured alike, and a smaller batch holds fewer activations (README, "Export for fast inference").
    """
    lengths = [len(ids) for ids in tokenizer(inputs, truncation=True, max_length=512).input_ids]
    groups: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(inputs)), key=lambda i: lengths[i]):
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[i] > budget):
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    return groups


def _torch_generate(model, tokenizer, batch: list[str], max_new_tokens: int, num_candidates: int, sample: bool,
                    seed: int, temperature: float) -> list[list[int]]:
    """`num_candidates` rows of generated ids per text (EOS kept, decoder start and padding dropped)."""
    import torch

    device = next(model.parameters()).device
    kwargs: dict = {"max_new_tokens": max_new_tokens, "num_return_sequences": num_candidates}
    if sample:
        kwargs.update(do_sample=True, top_k=0, top_p=1.0, temperature=temperature)
    elif num_candidates > 1:
        kwargs.update(num_beams=num_candidates, do_sample=False)
    else:
        kwargs.update(do_sample=False, num_beams=1)
    enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=512).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(**enc, **kwargs)
    return [_generated_ids(row, tokenizer) for row in out.tolist()]


def _generated_ids(row: list[int], tokenizer) -> list[int]:
    """A generated row without the decoder start token and padding; the EOS is kept when present."""
    row = row[1:]  # seq2seq generate starts every row with decoder_start_token_id
    eos = tokenizer.eos_token_id
    return row[: row.index(eos) + 1] if eos in row else [t for t in row if t != tokenizer.pad_token_id]


def ended(ids: Sequence[int], tokenizer) -> bool:
    """Whether a generation stopped on its own (EOS) rather than at max_new_tokens."""
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def skeleton(text: str, embeddings: frozenset[str]) -> list:
    """Everything in a prompt but its text leaves: what a rewrite must not change."""
    from bridge.syntax.prompt import Text, parse, walk

    return [(type(n).__name__, getattr(n, "raw", None), getattr(n, "open", None), getattr(n, "close", None),
             getattr(n, "when_raw", None)) for n, _, _ in walk(parse(text, embeddings).nodes) if type(n) is not Text]


_EDGE = " \t\n,;"  # separators around a leaf's text stay where they are; the model sees the words


def split_edges(value: str) -> tuple[str, str, str]:
    """A leaf value as (leading separators, text, trailing separators): ", a red fox " -> (", ", "a red fox", " ")."""
    core = value.strip(_EDGE)
    if not core:
        return value, "", ""
    start = value.index(core)
    return value[:start], core, value[start + len(core):]


def refill(leaf, text: str) -> None:
    """Put `text` in a model leaf, keeping the leaf's own leading and trailing separators: they part it from its
    neighbours."""
    lead, _, trail = split_edges(leaf.value)
    leaf.value = lead + text + trail


def model_leaves(nodes) -> list:
    """The leaves of a parsed prompt that go to the model (those with letters), in order."""
    from bridge.syntax.prompt import leaves

    return [leaf for leaf in leaves(nodes) if needs_rewrite(leaf.value)]


def mark(leaves: Sequence[str]) -> str:
    """The model's view of a prompt's text leaves (stripped): numbered in order; one leaf alone is plain."""
    if len(leaves) == 1:
        return leaves[0]
    return " ".join(f"[{i}] {text}" for i, text in enumerate(leaves, 1))


def unmark(text: str, n: int) -> list[str] | None:
    """The per-leaf outputs of a marked answer for `n` leaves; None when its markers are not [1]..[n] in order."""
    if n == 1:
        return [text.strip()]
    parts = _MARKER.split(text)  # [before [1], "1", leaf 1, "2", leaf 2, ...]
    if parts[0].strip() or parts[1::2] != [str(i) for i in range(1, n + 1)]:
        return None
    return [x.strip() for x in parts[2::2]]


def _flat_words(values: Sequence[str]) -> tuple[list[str], list[int]]:
    """The words of a prompt's model leaves (their raw values) in order, and the leaf each belongs to. A comma
    that parts two leaves ends the word before it: `(masterpiece:1.2), a cat` reads `masterpiece, a cat`."""
    words: list[str] = []
    owners: list[int] = []
    trail = ""
    for i, value in enumerate(values):
        lead, core, after = split_edges(value)
        if words and ("," in trail or "," in lead) and not words[-1].endswith(","):
            words[-1] += ","
        words += core.split()
        owners += [i] * len(core.split())
        trail = after
    return words, owners


def flatten(values: Sequence[str]) -> str:
    """The model's view of a prompt in format "flat": its leaves' words, one space apart (module docstring)."""
    return " ".join(_flat_words(values)[0])


def _align_key(word: str) -> str:
    """What the alignment compares: a word without its trailing commas, "an" as "a" ("an azure" -> "a blue")."""
    word = word.rstrip(",").lower()
    return "a" if word == "an" else word


def unflatten(text: str, values: Sequence[str]) -> list[str] | None:
    """Each leaf's text of a flat answer `text` to the leaves `values` (raw, as `flatten` read them), by a word
    alignment (difflib, on `_align_key`): kept words stay in their leaf; a replacement takes its source's leaf,
    or, where its source spans leaves, as many words for each leaf as it had and the rest for the last; an
    insertion joins the leaf before it (the first leaf at the start). A leaf the alignment left empty whose words
    the answer has elsewhere, moved ("on a white background (at the bottom:1.2)" answered "at the bottom on a
    white background"), takes them back, so a weighted clause keeps its weight wherever the model put it. None
    when a leaf is still empty: its weight or bracket would hold nothing."""
    from difflib import SequenceMatcher

    words, owners = _flat_words(values)
    out = text.split()
    keys, out_keys = [_align_key(w) for w in words], [_align_key(w) for w in out]
    leaf_of = [0] * len(out)  # each answer word's leaf
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, keys, out_keys, autojunk=False).get_opcodes():
        if tag == "insert":
            leaf_of[j1:j2] = [owners[i1 - 1] if i1 > 0 else owners[0]] * (j2 - j1)
        elif tag in ("equal", "replace"):
            span, at = owners[i1:i2], j1
            for n, leaf in enumerate(dict.fromkeys(span)):
                take = j2 - at if n == len(set(span)) - 1 else min(span.count(leaf), j2 - at)
                leaf_of[at:at + take] = [leaf] * take
                at += take
    for leaf in range(len(values)):
        mine = [k for k, o in zip(keys, owners) if o == leaf]
        if leaf in leaf_of or not mine:
            continue
        hit = next((j for j in range(len(out) - len(mine) + 1) if out_keys[j:j + len(mine)] == mine), None)
        if hit is not None:  # moved: the words go back to their leaf
            leaf_of[hit:hit + len(mine)] = [leaf] * len(mine)
    result = []
    for i, value in enumerate(values):
        leaf = " ".join(w for w, o in zip(out, leaf_of) if o == i)
        if leaf.endswith(",") and not split_edges(value)[1].endswith(","):
            leaf = leaf[:-1]  # the comma flatten put between two leaves; the leaf's own separators come back
        if not leaf:
            return None
        result.append(leaf)
    return result


def sequences(leaves: Sequence[str], fmt: str) -> list[tuple[str, list[int]]]:
    """The model inputs for a prompt's leaves (raw values) and the leaves each one covers: one per leaf ("leaf"),
    or the whole prompt in one ("marked", "flat")."""
    if not leaves:
        return []
    if fmt == "flat":
        return [(flatten(leaves), list(range(len(leaves))))]
    cores = [split_edges(value)[1] for value in leaves]
    if fmt == "leaf":
        return [(text, [i]) for i, text in enumerate(cores)]
    return [(mark(cores), list(range(len(cores))))]


@dataclass
class Candidate:
    """One rewrite of a prompt: its text, the (model input, model output) sequences that made it (one per
    leaf, or one for the whole prompt) with their sampled ids, and whether it fell back to the input
    because the rewrite broke the structure or (`unfinished`) a generation hit the token limit."""

    text: str
    inputs: list[str]
    outputs: list[str]
    fallback: bool
    ids: list[list[int]] = field(default_factory=list)  # the sampled token ids of each output
    unfinished: bool = False


def rewrite_prompts(model, tokenizer, texts: Sequence[str], embeddings: frozenset[str], prefix: str = PREFIX,
                    num_candidates: int = 1, sample: bool = False, seed: int = 0, max_new_tokens: int = 96,
                    batch_size: int = 32, temperature: float = 1.0, fallback_unfinished: bool = True,
                    size_from_input: bool = True, fmt: str = "marked") -> list[list[Candidate]]:
    """Rewrite the text leaves of each prompt; `num_candidates` candidates per prompt.

    Model inputs are deduplicated across all prompts before generation. A candidate whose structure does
    not read back like the input's (markers included), or (with `fallback_unfinished`, as served) one with
    a generation that did not end before the token limit, is replaced by the input text (fallback=True;
    `unfinished` says which). Training keeps unfinished candidates as generated and counts them.
    """
    from bridge.syntax.prompt import parse, serialize

    if fmt not in FORMATS:
        raise ValueError(f"unknown rewrite format {fmt!r} (known: {', '.join(FORMATS)})")
    parsed = [parse(t, embeddings) for t in texts]
    values = [[leaf.value for leaf in model_leaves(p.nodes)] for p in parsed]
    plans = [sequences(v, fmt) for v in values]
    unique = sorted({seq for plan in plans for seq, _ in plan})
    generated = generate(model, tokenizer, unique, prefix=prefix, num_candidates=num_candidates, sample=sample,
                         seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                         return_ids=True, size_from_input=size_from_input)
    table = dict(zip(unique, generated))
    result = []
    for text, p, plan, raw in zip(texts, parsed, plans, values):
        want = skeleton(text, embeddings)
        cands = []
        for c in range(num_candidates):
            work = p.copy()
            targets = model_leaves(work.nodes)
            ins, outs, ids, readable = [], [], [], True
            for seq, covered in plan:
                out_text, out_ids = table[seq][c]
                ins.append(seq)
                outs.append(out_text)
                ids.append(out_ids)
                if fmt == "flat":
                    parts = unflatten(out_text, raw)
                else:
                    parts = [out_text] if fmt == "leaf" else unmark(out_text, len(covered))
                if parts is None:
                    readable = False
                    continue
                for i, part in zip(covered, parts):
                    refill(targets[i], repair_leaf(part))
            candidate = serialize(work.nodes)
            # A generation cut off at the token limit is not a rewrite: fall back rather than truncate silently.
            unfinished = not all(ended(x, tokenizer) for x in ids)
            ok = readable and skeleton(candidate, embeddings) == want and not (unfinished and fallback_unfinished)
            cands.append(Candidate(candidate if ok else text, ins, outs, not ok, ids, unfinished))
        result.append(cands)
    return result
