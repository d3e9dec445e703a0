"""The learned rewriter: a seq2seq model (flan-t5 family) that rewrites prompt *leaf text*.

Only text leaves are rewritten (DESIGN §3: translate only leaf text); weights, tags, BREAK/AND, editing,
alternation and escapes stay in the tree around them, so every output is a valid prompt with the user's
structure. Leaves without letters (", ", " ") are never sent to the model.

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
        data = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


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
             temperature: float = 1.0, return_ids: bool = False, size_from_input: bool = True) -> list[list]:
    """Rewrite each text; `num_candidates` outputs per text (greedy/beam when not sampling, so deterministic).

    Inputs are sorted by length and batched, so padding is small; outputs come back in input order.
    Sampling draws from a private RNG stream seeded with `seed` (the global torch RNG is untouched).
    With `return_ids`, each output is `(text, ids)`: the generated token ids themselves, up to and with the
    EOS when there is one (training scores exactly these; decoded text can re-encode to other ids).
    With `size_from_input` the limit of a batch grows with its longest input (`max_new_tokens` is then the
    floor); without it `max_new_tokens` is a hard cap.
    """
    import torch

    if not texts:
        return []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: list[list] = [[] for _ in texts]
    device = next(model.parameters()).device
    kwargs: dict = {"max_new_tokens": max_new_tokens, "num_return_sequences": num_candidates}
    if sample:
        kwargs.update(do_sample=True, top_k=0, top_p=1.0, temperature=temperature)
    elif num_candidates > 1:
        kwargs.update(num_beams=num_candidates, do_sample=False)
    else:
        kwargs.update(do_sample=False, num_beams=1)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prefix + texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=512).to(device)
        # Room for the longest input of the batch rewritten at twice its length: a fixed cap cut 1.1% of
        # real leaves short. `max_new_tokens` is the floor.
        if size_from_input:
            longest = max(len(tokenizer(texts[i], add_special_tokens=False).input_ids) for i in idx)
            kwargs["max_new_tokens"] = max(max_new_tokens, 2 * longest + 8)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed + start)
            out = model.generate(**enc, **kwargs)
        decoded = tokenizer.batch_decode(out, skip_special_tokens=True)
        ids = [_generated_ids(row, tokenizer) for row in out.tolist()] if return_ids else None
        for j, i in enumerate(idx):
            span = range(j * num_candidates, (j + 1) * num_candidates)
            outputs[i] = [(decoded[k].strip(), ids[k]) if return_ids else decoded[k].strip() for k in span]
    return outputs


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
    from bridge.prompt import Text, parse, walk

    return [(type(n).__name__, getattr(n, "raw", None), getattr(n, "open", None), getattr(n, "close", None),
             getattr(n, "when_raw", None)) for n, _, _ in walk(parse(text, embeddings).nodes) if type(n) is not Text]


@dataclass
class Candidate:
    """One rewrite of a prompt: its text, the (input, output) leaf pairs the model produced for it, and
    whether it fell back to the input because the rewrite broke the structure."""

    text: str
    leaf_inputs: list[str]
    leaf_outputs: list[str]
    fallback: bool
    leaf_ids: list[list[int]] = field(default_factory=list)  # the sampled token ids of each leaf output
    unfinished: bool = False  # a leaf's generation hit the token limit before its EOS (so it fell back)


def rewrite_prompts(model, tokenizer, texts: Sequence[str], embeddings: frozenset[str], prefix: str = PREFIX,
                    num_candidates: int = 1, sample: bool = False, seed: int = 0, max_new_tokens: int = 96,
                    batch_size: int = 32, temperature: float = 1.0,
                    fallback_unfinished: bool = True, size_from_input: bool = True) -> list[list[Candidate]]:
    """Rewrite the text leaves of each prompt; `num_candidates` candidates per prompt.

    Leaves are deduplicated across all prompts before generation. A candidate whose structure does not
    read back like the input's, or (with `fallback_unfinished`, as served) one with a leaf that did not end
    before the token limit, is replaced by the input text (fallback=True; `unfinished` says which).
    Training keeps unfinished candidates as generated and counts them.
    """
    from bridge.prompt import leaves, parse, serialize

    parsed = [parse(t, embeddings) for t in texts]
    unique = sorted({leaf.value for p in parsed for leaf in leaves(p.nodes) if needs_rewrite(leaf.value)})
    generated = generate(model, tokenizer, unique, prefix=prefix, num_candidates=num_candidates, sample=sample,
                         seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                         return_ids=True, size_from_input=size_from_input)
    table = {text: outs for text, outs in zip(unique, generated)}
    result = []
    for text, p in zip(texts, parsed):
        want = skeleton(text, embeddings)
        cands = []
        for c in range(num_candidates):
            work = p.copy()
            ins, outs, ids = [], [], []
            for leaf in leaves(work.nodes):
                value = leaf.value
                if value not in table:
                    continue
                out_text, out_ids = table[value][c]
                ins.append(value)
                outs.append(out_text)
                ids.append(out_ids)
                # Keep the leaf's own leading/trailing spaces: they separate it from its neighbours.
                lead, trail = value[: len(value) - len(value.lstrip())], value[len(value.rstrip()):]
                leaf.value = lead + repair_leaf(out_text) + trail
            candidate = serialize(work.nodes)
            # A leaf cut off at the token limit is not a rewrite: fall back rather than truncate silently.
            unfinished = not all(ended(x, tokenizer) for x in ids)
            ok = skeleton(candidate, embeddings) == want and not (unfinished and fallback_unfinished)
            cands.append(Candidate(candidate if ok else text, ins, outs, not ok, ids, unfinished))
        result.append(cands)
    return result
