"""The faithfulness guard (#40): a learned rewrite may change only what its adapter learned to change.

A renderer ignores many words a person cares about ("masterpiece", "fox" in a world of shapes), so the reward
alone cannot keep them: a trained toy adapter turned "a photo of a crimson fox in the snow" into "a red dotted
circle on the right" without a warning. So every learned rewrite is compared with its source before it is
returned:

1. Words. Both sides are read as the lower-case words of their text leaves (weights, tags and BREAK are the
   structure check's business), less a short list of function words ("a", "of", "the"). The content words
   the source has and the rewrite lacks are *dropped*, the ones the rewrite adds are *added* (multisets, so a
   word that only moves is neither). Aligned replacements ("crimson" -> "red") come from difflib's opcodes.
2. What the adapter learned. Training records every sampled rewrite's dropped and added words with whether
   the reward *accepted* it (above its group's mean) or rejected it (below), and the content words of its
   training prompts (`EditRecord`, the adapter's `edits.json`; words are stored as salted hashes, like the
   training prompts, so an adapter can be shared without its data). A word is a learned drop (or add) when
   rewrites that dropped (added) it were accepted at least MIN_ACCEPTED times and more often than rejected:
   the reward kept choosing that edit, not once by render noise.
3. Unseen words. A word the adapter never met in training cannot be a learned edit, yet its correct
   translation has to pass (the held-out class members of "learning that generalises"). An unseen word
   replaced in place, one word for one, passes under `strict` when its replacement is a *class*: a word the
   adapter learned to write, one for one, for at least CLASS_MIN different source words (crimson and scarlet
   -> red, so vermilion -> red). Several unseen words in one replacement ("petite cherry" -> "small red") pass
   only when each target is a class that accepted rewrites also wrote inside several-for-several replacements
   ("tiny crimson" -> "small red"); otherwise words paired by position alone would pass. Under `lenient` one
   source word makes a class, and up to three unseen words may become one learned word ("by greg rutkowski" ->
   "dotted"). A word the adapter met and never learned to change (a "circle" it always kept) is never licensed
   this way (`_licensed`).

Anything else fails the guard: the translator returns the syntax strategy's output with a `rewrite-unfaithful`
warning naming the words (`Translator.translate`). `off` returns rewrites unchecked. Without an edit record
(adapters trained before it existed) every content change fails under strict and lenient: that loses nothing.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from bridge.syntax.policy import FAITHFULNESS

EDITS = "edits.json"
NEGATIVE_EDITS = "edits-negative.json"  # with --rewrite-negative: what the adapter learned to change in negatives
MIN_ACCEPTED = 3  # accepted rewrites that made an edit before it counts as learned (render noise picks some)
CLASS_MIN = 2  # distinct source words a target replaced before an unseen word may be replaced by it (strict)
LENIENT_SPAN = 3  # source words one in-place replacement may cover under lenient ("by greg rutkowski")
_SALT = "sd-bridge edit record v1:"
# Words that carry grammar, not content: dropping "the" or adding "a" is a rewording, not a loss. English only,
# like the prompts the project reads (../shared/prompts); short on purpose, so a real word is never ignored.
FUNCTION_WORDS = frozenset("""a an the of in on at by with and or to for from into onto over under as is are
its it this that these those very""".split())
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


@functools.lru_cache(maxsize=8192)
def leaf_words(text: str, embeddings: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The lower-case words of a prompt's text leaves, in order (structure, tags and embeddings left out).
    Cached: the translator reads a source once to decide whether to rewrite it and again to check the rewrite,
    training reads each prompt once per candidate, and eval once per strategy."""
    from bridge.syntax.prompt import leaves, parse

    return tuple(w.lower() for leaf in leaves(parse(text, embeddings).nodes) for w in _WORD.findall(leaf.value))


def content(words: Iterable[str]) -> list[str]:
    return [w for w in words if w not in FUNCTION_WORDS]


@dataclass
class Edit:
    """What a rewrite changed in content words: dropped and added (multisets), and the in-place replacements
    (source content words, rewrite content words) that difflib aligns."""

    dropped: list[str]
    added: list[str]
    replaced: list[tuple[list[str], list[str]]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dropped or self.added)


def diff(source: Sequence[str], rewrite: Sequence[str]) -> Edit:
    """The content-word edit from `source` words to `rewrite` words (see the module docstring, step 1)."""
    src, out = Counter(content(source)), Counter(content(rewrite))
    dropped, added = src - out, out - src
    if not dropped and not added:
        return Edit([], [])
    replaced = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, source, rewrite, autojunk=False).get_opcodes():
        if op == "replace":
            s = [w for w in content(source[i1:i2]) if w in dropped]
            d = [w for w in content(rewrite[j1:j2]) if w in added]
            if s and d:
                replaced.append((s, d))
    return Edit(sorted(dropped.elements()), sorted(added.elements()), replaced)


def word_key(word: str) -> str:
    """A word as the record stores it: a salted sha256 prefix (the record ships with the adapter, the data not)."""
    return hashlib.sha256((_SALT + word).encode("utf-8")).hexdigest()[:16]


@dataclass
class EditRecord:
    """What an adapter learned to change (module docstring, step 2). Keys are `word_key`s."""

    drop: dict[str, list[int]] = field(default_factory=dict)  # word -> [accepted, rejected]
    add: dict[str, list[int]] = field(default_factory=dict)
    # target word -> {source word: accepted rewrites that replaced it word for word by the target}
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    vocabulary: set[str] = field(default_factory=set)  # content words of the training prompts
    # target word -> accepted rewrites that wrote it as one of several words replacing several ("tiny crimson"
    # -> "small red"): where an unseen word may be one of several new pairs in one replacement
    multi: dict[str, int] = field(default_factory=dict)

    # -- recording (training)
    def count(self, edit: Edit, accepted: bool) -> None:
        slot = 0 if accepted else 1
        for table, words in ((self.drop, edit.dropped), (self.add, edit.added)):
            for w in set(words):
                table.setdefault(word_key(w), [0, 0])[slot] += 1
        if accepted:  # classes from one-for-one replacements only: pairs by position in longer ones can be chance
            for src, dst in edit.replaced:
                if len(src) == len(dst) == 1:
                    row = self.sources.setdefault(word_key(dst[0]), {})
                    row[word_key(src[0])] = row.get(word_key(src[0]), 0) + 1
                elif len(src) >= 2 and len(dst) >= 2:
                    for w in set(dst):
                        self.multi[word_key(w)] = self.multi.get(word_key(w), 0) + 1

    def merge(self, other: "EditRecord") -> None:
        for mine, theirs in ((self.drop, other.drop), (self.add, other.add)):
            for k, (a, r) in theirs.items():
                row = mine.setdefault(k, [0, 0])
                row[0], row[1] = row[0] + a, row[1] + r
        for k, srcs in other.sources.items():
            row = self.sources.setdefault(k, {})
            for src, n in srcs.items():
                row[src] = row.get(src, 0) + n
        self.vocabulary |= other.vocabulary
        for k, n in other.multi.items():
            self.multi[k] = self.multi.get(k, 0) + n

    def see(self, texts: Iterable[str], embeddings: frozenset[str] = frozenset()) -> None:
        for t in texts:
            self.vocabulary.update(word_key(w) for w in content(leaf_words(t, embeddings)))

    # -- reading (serving)
    @staticmethod
    def _learned(row: list[int] | None) -> bool:
        return row is not None and row[0] >= MIN_ACCEPTED and row[0] > row[1]

    def learned_drop(self, word: str) -> bool:
        return self._learned(self.drop.get(word_key(word)))

    def learned_add(self, word: str) -> bool:
        return self._learned(self.add.get(word_key(word)))

    def seen(self, word: str) -> bool:
        return word_key(word) in self.vocabulary

    def _members(self, row: dict[str, int]) -> int:
        """Learned drops that accepted rewrites replaced by one target word for word at least MIN_ACCEPTED times
        (`row`: a `sources` entry); once by noise is no class."""
        return sum(n >= MIN_ACCEPTED and self._learned(self.drop.get(src)) for src, n in row.items())

    def class_size(self, word: str) -> int:
        """How many distinct source words the adapter learned to replace by `word`."""
        return self._members(self.sources.get(word_key(word), {}))

    def replaced(self, word: str) -> bool:
        """Whether accepted rewrites replaced `word` one for one by some word MIN_ACCEPTED times (big -> large),
        rather than only dropping it (solid)."""
        key = word_key(word)
        return any(row.get(key, 0) >= MIN_ACCEPTED for row in self.sources.values())

    def multi_target(self, word: str) -> bool:
        """Whether accepted rewrites wrote `word` inside a several-for-several replacement MIN_ACCEPTED times."""
        return self.multi.get(word_key(word), 0) >= MIN_ACCEPTED

    def knows_any(self, words: Iterable[str]) -> bool:
        """Whether any content word was in a training prompt: a prompt without one has nothing to translate."""
        return any(self.seen(w) for w in content(words))

    def summary(self) -> dict:
        return {"learned_drops": sum(map(self._learned, self.drop.values())),
                "learned_adds": sum(map(self._learned, self.add.values())),
                "classes": sum(self._members(row) >= CLASS_MIN for row in self.sources.values()),
                "vocabulary": len(self.vocabulary)}

    # -- files
    def counts(self) -> dict:
        """The counts alone (what a training step logs; `from_json` reads them back)."""
        return {"drop": self.drop, "add": self.add, "sources": self.sources, "multi": self.multi}

    def to_json(self) -> dict:
        return {"format": "sd-bridge edit record", "version": 1, "hash": f"sha256('{_SALT}' + word)[:16]",
                "min_accepted": MIN_ACCEPTED, "drop": self.drop, "add": self.add, "sources": self.sources,
                "multi": self.multi, "vocabulary": sorted(self.vocabulary)}

    @classmethod
    def from_json(cls, data: dict) -> "EditRecord":
        def table(name):
            value = data.get(name, {})
            if not isinstance(value, dict) or not all(
                    isinstance(v, list) and len(v) == 2 and all(type(x) is int and x >= 0 for x in v)
                    for v in value.values()):
                raise ValueError(f"{name} must map words to [accepted, rejected] counts")
            return {str(k): list(v) for k, v in value.items()}

        sources, vocabulary = data.get("sources", {}), data.get("vocabulary", [])
        if not isinstance(sources, dict) or not all(
                isinstance(row, dict) and all(type(n) is int and n >= 0 for n in row.values())
                for row in sources.values()):
            raise ValueError("sources must map words to {word: count}")
        if not isinstance(vocabulary, list) or not all(isinstance(w, str) for w in vocabulary):
            raise ValueError("vocabulary must be a list of words")
        multi = data.get("multi", {})  # absent in records written before it: no several-for-several licence
        if not isinstance(multi, dict) or not all(type(n) is int and n >= 0 for n in multi.values()):
            raise ValueError("multi must map words to counts")
        return cls(table("drop"), table("add"), {k: dict(v) for k, v in sources.items()}, set(vocabulary),
                   {str(k): n for k, n in multi.items()})

    def save(self, directory: Path | str, name: str = EDITS) -> Path:
        path = Path(directory) / name
        path.write_text(json.dumps(self.to_json()) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path | str, name: str = EDITS) -> "EditRecord | None":
        """The adapter's record, or None for an adapter trained before records existed. A damaged one is refused
        with one line naming it (it decides what reaches a user's prompt)."""
        from bridge.models.rewriter import read_json

        path = Path(directory) / name
        if not path.is_file():
            return None
        try:
            return cls.from_json(read_json(path, "an edit record"))
        except ValueError as err:
            raise ValueError(f"{path} is not a valid edit record ({err}); retrain the adapter or take its "
                             "edits.json from the training output") from None


@dataclass
class Verdict:
    """The guard's answer on one rewrite: the content words it dropped and invented beyond what it may."""

    dropped: list[str]
    invented: list[str]

    @property
    def ok(self) -> bool:
        return not self.dropped and not self.invented

    def message(self) -> str:
        parts = []
        if self.dropped:
            parts.append("drops " + ", ".join(repr(w) for w in self.dropped))
        if self.invented:
            parts.append("adds " + ", ".join(repr(w) for w in self.invented))
        return (f"the rewrite {' and '.join(parts)}, which its adapter did not learn to change; the syntax "
                "strategy's output is used (--faithfulness lenient or off to take such rewrites)")


def check(source: str, rewrite: str, record: EditRecord | None, mode: str = "strict",
          embeddings: frozenset[str] = frozenset()) -> Verdict:
    """Whether `rewrite` changes only what `record` licenses (module docstring, steps 1-3)."""
    if mode not in FAITHFULNESS:
        raise ValueError(f"unknown faithfulness {mode!r}; choose one of {', '.join(FAITHFULNESS)}")
    if mode == "off" or source == rewrite:
        return Verdict([], [])
    edit = diff(leaf_words(source, embeddings), leaf_words(rewrite, embeddings))
    if not edit.changed:
        return Verdict([], [])
    if record is None:
        return Verdict(sorted(set(edit.dropped)), sorted(set(edit.added)))
    dropped = {w for w in edit.dropped if not record.learned_drop(w)}
    invented = {w for w in edit.added if not record.learned_add(w)}
    for src, dst in edit.replaced:
        unseen = [w for w in src if w in dropped and not record.seen(w)]
        if unseen and not any(v in invented for v in dst) and _licensed(src, dst, record, mode):
            dropped.difference_update(unseen)
    return Verdict(sorted(dropped), sorted(invented))


def _licensed(src: list[str], dst: list[str], record: EditRecord, mode: str) -> bool:
    """Whether one aligned replacement of unseen words by learned targets passes (module docstring, step 3).

    Word for word ("a big vermilion circle" -> "a large red circle"): every pair is a learned edit (big ->
    large) or an unseen word for a class target (strict; any learned target under lenient). What is licensed
    on its own is set aside before pairing, so "cherry solid" -> "red" pairs cherry with red ("solid" is a
    learned drop that accepted rewrites only ever dropped) and "navy" -> "blue dotted" pairs navy with blue
    ("dotted", written for an artist's name, is a learned add and no class target), while "huge pumpkin" ->
    "large orange striped" still pairs huge with large (huge is a word they replaced). Two or more new pairs in one replacement pass only where each target
    is one accepted rewrites wrote inside several-for-several replacements (`multi_target`: "tiny crimson" ->
    "small red" licenses "petite cherry" -> "small red"); otherwise they pair words by position alone, as
    "floating in space" -> "on a white background" does. Several words for one ("by greg rutkowski" ->
    "dotted") pass under lenient only."""
    need = CLASS_MIN if mode == "strict" else 1
    if len(src) != len(dst):
        rest_src = [u for u in src if not (record.seen(u) and record.learned_drop(u) and not record.replaced(u))]
        rest_dst = [v for v in dst if record.class_size(v) >= need or not record.learned_add(v)]
        if rest_src and len(rest_src) == len(rest_dst):
            src, dst = rest_src, rest_dst
    if len(src) == len(dst):
        new = [(u, v) for u, v in zip(src, dst) if not (record.learned_drop(u) and record.learned_add(v))]
        if not new or not all(not record.seen(u) and record.class_size(v) >= need for u, v in new):
            return False
        return len(new) == 1 or all(record.multi_target(v) for _, v in new)
    return mode == "lenient" and len(dst) == 1 and len(src) <= LENIENT_SPAN
