"""The toy world: a scene grammar whose correct translation is known.

A scene is one shape on a background: shape, colour, size, position, fill style and background colour.
`draw` paints the ground truth of any scene (PIL, 32 px) with seed-dependent jitter, so seeds matter as
they do in Stable Diffusion. Two *dialects* caption scenes the way the two toy models were trained:

- the source dialect (toy-sd15's captions) and the target dialect (toy-sd2's) name some values with
  different words, and each model draws its own *default* for an attribute a caption leaves out.

The differences are the documented drifts, modelled on what changed from SD1.5 to SD2 (DESIGN §1):

| drift | source prompt | what toy-sd2 draws for it | correct rewrite |
|---|---|---|---|
| vocabulary | a class per value: "crimson", "scarlet"...; "azure"...; "big", "huge"... | never saw them | "red", "blue", "large" |
| artist | "by bridget riley" / "by yayoi kusama" = striped / dotted fill (circles, squares) | never saw names | "striped" / "dotted" |
| context | the same names on a triangle: dotted / striped, the other way round | never saw names | "dotted" / "striped" |
| default | no background named: source draws white | black | add "on a white background" |
| negative | solid fill (said, or left out) | half its shapes hollow: it has no word for solid | the hollow version of the prompt as negative prompt |

The artist drift depends on its context: which fill a name stands for depends on the shape, so the same
phrase needs two rewrites in two prompts and no context-free word map holds both (#39 item 2).
The vocabulary drift is a class, not a list: every value has several source words (SYNONYMS), toy-sd15
draws each like the value's first word, toy-sd2 never saw any of them. Some members (HELDOUT_WORDS) never
occur in a training prompt, so a rewriter has to generalise to them from the members it was trained on.
A prompt with none of these is drawn alike by both models: its identity translation is already right.
The oracle (`oracle`) is written from this table, never learned. Prompts are split into train and
held-out by a hash of what they mean, so a held-out prompt never appears in training, in any word order.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (150, 60, 190), "orange": (245, 140, 30), "grey": (128, 128, 128)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "beige": (225, 205, 170)}
SIZES = {"small": 5.0, "medium": 8.0, "large": 11.0}  # radius in pixels at 32 px
POSITIONS = ("center", "left", "right", "top", "bottom")
FILLS = ("solid", "striped", "dotted", "outlined")
ATTRIBUTES = ("shape", "colour", "size", "position", "fill", "background")
DRIFTS = ("vocabulary", "artist", "context", "default", "negative")
IMAGE_SIZE = 32
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"  # the committed train and held-out splits
NAMED_COLOURS = tuple(c for c in COLOURS if c != "grey")  # what a prompt names; grey is the unnamed default
# The vocabulary drift's classes: a source word -> the other source words for the same value. toy-sd15 draws
# every member as it draws the first word (build.teach_synonyms); toy-sd2 never saw any of them. All are
# single tokens of the CLIP tokenizer, so a member's embedding row can stand in for the word's.
SYNONYMS = {
    "crimson": ("scarlet", "ruby", "cherry", "cardinal"),
    "azure": ("sapphire", "cobalt", "navy"),
    "green": ("emerald", "jade", "lime"),
    "yellow": ("golden", "lemon", "mustard", "canary"),
    "purple": ("violet", "lavender", "plum", "lilac", "amethyst"),
    "orange": ("tangerine", "apricot", "copper", "pumpkin"),
    "big": ("huge", "giant", "massive", "enormous"),
    "small": ("tiny", "little", "mini", "petite"),
}
# Members that never occur in a training prompt: the held-out split carries them, so a rewriter's gap on them
# measures what it generalised from the other members of their class.
# The artists' styles: a name -> the fill it stands for on each shape. Like a real artist's name, which stands
# for one style in a portrait and another in a landscape, each stands for a different fill on triangles: the
# "context" drift, the artist drift's prompts whose correct rewrite is not the name's usual one.
ARTISTS = {"by bridget riley": {"circle": "striped", "square": "striped", "triangle": "dotted"},
           "by yayoi kusama": {"circle": "dotted", "square": "dotted", "triangle": "striped"}}
HELDOUT_WORDS = frozenset({"cherry", "cardinal", "cobalt", "navy", "lime", "mustard", "canary", "lilac", "amethyst",
                           "copper", "pumpkin", "massive", "enormous", "mini", "petite"})


@dataclass(frozen=True)
class Scene:
    """A fully specified scene: what one image shows (before per-seed jitter)."""

    shape: str = "circle"
    colour: str = "grey"
    size: str = "medium"
    position: str = "center"
    fill: str = "solid"
    background: str = "white"

    def __post_init__(self):
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("position", POSITIONS),
                              ("fill", FILLS), ("background", BACKGROUNDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Spec:
    """What a caption says: each attribute a value, or None when the caption leaves it out. `artist` marks
    a fill said as an artist's name (source dialect only)."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    fill: str | None = None
    background: str | None = None
    artist: bool = False
    # Which member of its class names the colour / size, when not the dialect's first word (SYNONYMS).
    colour_word: str | None = None
    size_word: str | None = None

    def key(self) -> str:
        """What the spec means, independent of word order and of which synonym says it: the split key."""
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if not f.name.endswith("_word"))

    def words(self) -> tuple[str, ...]:
        """The class members this spec is said with."""
        return tuple(w for w in (self.colour_word, self.size_word) if w is not None)


@dataclass(frozen=True)
class Dialect:
    """How one model's captions name values, and what that model draws for attributes left out."""

    name: str
    colours: dict[str, str]  # value -> word
    sizes: dict[str, str]
    fills: dict[str, str]
    artists: dict[str, dict[str, str]] = field(default_factory=dict)  # "by NAME" -> {shape: fill}
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # word -> more words for its value
    # attribute -> {value: probability} drawn when a caption leaves the attribute out
    defaults: dict[str, dict[str, float]] = field(default_factory=dict)
    say_center: bool = False  # the neutral dialect says "in the center"; the model dialects leave it out

    def words(self, table: dict[str, str], value: str) -> tuple[str, ...]:
        """Every word this dialect has for `value` of `table` (its colours or sizes), the first word first."""
        first = table[value]
        return (first, *self.synonyms.get(first, ()))

    def artist_phrase(self, fill: str | None, shape: str | None) -> str | None:
        """The artist's name this dialect says for `fill` on `shape`, or None (no such artist, or no shape)."""
        if fill is None or shape is None:
            return None
        return next((p for p, style in self.artists.items() if style.get(shape) == fill), None)

    def artist_fills(self) -> set[str]:
        """The fills some artist's name stands for, on some shape."""
        return {f for style in self.artists.values() for f in style.values()}

    def default(self, attribute: str, rng: random.Random) -> str:
        table = self.defaults[attribute]
        return rng.choices(list(table), weights=list(table.values()))[0]


_COMMON_DEFAULTS = {"shape": {s: 1.0 for s in SHAPES}, "colour": {"grey": 1.0}, "size": {"medium": 1.0},
                    "position": {"center": 1.0}}
SOURCE = Dialect(
    name="source",
    colours={"red": "crimson", "green": "green", "blue": "azure", "yellow": "yellow", "purple": "purple",
             "orange": "orange"},
    sizes={"small": "small", "large": "big"},
    fills={"solid": "solid", "striped": "striped", "dotted": "dotted", "outlined": "outlined"},
    artists=ARTISTS,
    synonyms=SYNONYMS,
    defaults={**_COMMON_DEFAULTS, "fill": {"solid": 1.0}, "background": {"white": 1.0}},
)
TARGET = Dialect(
    name="target",
    colours={"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "purple": "purple",
             "orange": "orange"},
    sizes={"small": "small", "large": "large"},
    # No word for "solid": toy-sd2 only gets a solid shape by steering away from "outlined" (negative prompt).
    fills={"striped": "striped", "dotted": "dotted", "outlined": "outlined"},
    defaults={**_COMMON_DEFAULTS, "fill": {"solid": 0.5, "outlined": 0.5}, "background": {"black": 1.0}},
)
# Dialect-neutral captions of fully specified scenes: what the scorer toy-clip is trained on.
NEUTRAL = Dialect(
    name="neutral", colours={c: c for c in COLOURS}, sizes={s: s for s in SIZES}, fills={f: f for f in FILLS},
    defaults={}, say_center=True,
)
# Every word either dialect has for a colour or a size, filed under the target's word, and every fill word and
# artist: the language of toy-t5's paraphrase corpus, which must not say which words toy-sd2 knows.
ANY = Dialect(
    name="any", colours=dict(TARGET.colours), sizes=dict(TARGET.sizes), fills=dict(SOURCE.fills),
    artists=dict(SOURCE.artists), defaults={},
    synonyms={word: tuple(w for w in SOURCE.words(table, value) if w != word)
              for table, target in ((SOURCE.colours, TARGET.colours), (SOURCE.sizes, TARGET.sizes))
              for value, word in target.items()},
)
DIALECTS = {d.name: d for d in (SOURCE, TARGET, NEUTRAL, ANY)}
_POSITION_WORDS = {"center": "in the center", "left": "on the left", "right": "on the right", "top": "at the top",
                   "bottom": "at the bottom"}


# ---------------------------------------------------------------------------------------------- captions

def write(spec: Spec, dialect: Dialect, rng: random.Random | None = None) -> str:
    """The caption of `spec` in `dialect`. With `rng`, the trailing clauses come in a random order."""
    words = []
    if spec.size is not None and spec.size in dialect.sizes:
        words.append(_say(dialect, dialect.sizes, spec.size, spec.size_word))
    if spec.colour is not None:
        words.append(_say(dialect, dialect.colours, spec.colour, spec.colour_word))
    artist = dialect.artist_phrase(spec.fill, spec.shape) if spec.artist else None
    if spec.fill is not None and not artist:
        if spec.fill not in dialect.fills:
            raise ValueError(f"the {dialect.name} dialect has no word for fill {spec.fill!r}")
        words.append(dialect.fills[spec.fill])
    words.append(spec.shape or "shape")
    head = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    clauses = []
    if spec.position is not None and (spec.position != "center" or dialect.say_center):
        clauses.append(_POSITION_WORDS[spec.position])
    if spec.background is not None:
        clauses.append(f"on a {spec.background} background")
    if artist:
        clauses.append(artist)
    if rng is not None:
        rng.shuffle(clauses)
    return " ".join([head] + clauses)


def _say(dialect: Dialect, table: dict[str, str], value: str, member: str | None) -> str:
    """The member of `value`'s class a spec asks for, where this dialect knows it; else the first word."""
    return member if member is not None and member in dialect.words(table, value) else table[value]


class NotAToyPrompt(ValueError):
    """A prompt that the toy world's grammar cannot read."""


def read(prompt: str, dialect: Dialect) -> Spec:
    """Parse a caption written in `dialect` back into the spec it says (the inverse of `write`)."""
    text = " " + re.sub(r"[\s,]+", " ", prompt.lower()).strip() + " "
    values: dict = {}

    def take(pattern: str) -> list[str]:
        nonlocal text
        found = re.findall(pattern, text)
        text = re.sub(pattern, " ", text)
        return found

    artist = None
    for phrase in dialect.artists:
        if take(f" {re.escape(phrase)} "):
            artist = phrase
    for value, phrase in _POSITION_WORDS.items():
        if take(f" {re.escape(phrase)} "):
            values["position"] = value
    for bg in take(r" on an? (\w+) background "):
        if bg not in BACKGROUNDS:
            raise NotAToyPrompt(f"unknown background {bg!r} in {prompt!r}")
        values["background"] = bg
    lookup = {}
    for attr, table in (("size", dialect.sizes), ("colour", dialect.colours), ("fill", dialect.fills)):
        for value in table:
            first, *members = dialect.words(table, value) if attr != "fill" else (table[value],)
            lookup[first] = (attr, value, None)
            lookup.update({m: (attr, value, m) for m in members})
    lookup.update({s: ("shape", s, None) for s in SHAPES})
    for word in text.split():
        if word in ("a", "an", "shape"):
            continue
        if word not in lookup:
            raise NotAToyPrompt(f"{word!r} is not a word of the toy world's {dialect.name} dialect "
                                f"(in {prompt!r})")
        attr, value, member = lookup[word]
        if attr in values:
            raise NotAToyPrompt(f"{attr} is said twice in {prompt!r}")
        values[attr] = value
        if member is not None:
            values[f"{attr}_word"] = member
    if artist is not None:  # what a name stands for depends on the shape it paints
        if "shape" not in values:
            raise NotAToyPrompt(f"{artist!r} stands for a fill only on a named shape (in {prompt!r})")
        if "fill" in values:
            raise NotAToyPrompt(f"fill is said twice in {prompt!r}")
        values.update(fill=dialect.artists[artist][values["shape"]], artist=True)
    return Spec(**values)


def realize(spec: Spec, dialect: Dialect, rng: random.Random) -> Scene:
    """The scene a model of `dialect` draws for `spec`: said values, its own defaults for the rest."""
    return Scene(**{a: getattr(spec, a) if getattr(spec, a) is not None else dialect.default(a, rng)
                    for a in ATTRIBUTES})


# ---------------------------------------------------------------------------------------------- the oracle

@dataclass(frozen=True)
class Oracle:
    prompt: str
    negative_prompt: str
    drifts: list[str]


def drifts_of(spec: Spec) -> list[str]:
    """Which documented drifts a source-dialect spec carries (empty: identity is already right)."""
    out = []
    if SOURCE.colours.get(spec.colour) != TARGET.colours.get(spec.colour) or \
            SOURCE.sizes.get(spec.size) != TARGET.sizes.get(spec.size) or spec.words():
        out.append("vocabulary")
    if spec.artist:
        out.append("artist")
        style = SOURCE.artists[SOURCE.artist_phrase(spec.fill, spec.shape)]
        usual = max(set(style.values()), key=list(style.values()).count)
        if spec.fill != usual:
            out.append("context")
    if spec.background is None:
        out.append("default")
    if spec.fill in (None, "solid"):
        out.append("negative")
    return out


def translate_spec(spec: Spec) -> tuple[Spec, Spec | None]:
    """What the target must be told to draw what the source draws for `spec`: (target spec, the spec of
    its negative prompt, or None)."""
    fill = spec.fill if spec.fill is not None else SOURCE.default("fill", random.Random(0))
    background = spec.background
    if background is None:  # the source's default, said out loud, where the target's default differs
        source_bg = SOURCE.default("background", random.Random(0))
        background = source_bg if TARGET.defaults["background"] != {source_bg: 1.0} else None
    told = replace(spec, fill=fill if fill in TARGET.fills else None, background=background, artist=False,
                   colour_word=None, size_word=None)
    if fill in TARGET.fills:
        return told, None
    # Solid: the target has no word for it and draws half its shapes hollow. The negative prompt names the
    # same scene hollow, so classifier-free guidance pushes along the fill only (a bare "outlined" negative
    # also pushes away from everything else an outlined shape has: colour, size, the shape itself).
    return told, replace(told, fill="outlined")


def oracle(prompt: str, negative_prompt: str = "") -> Oracle:
    """The correct translation of a source-dialect toy prompt, written from the drift table."""
    spec = read(prompt, SOURCE)
    target_spec, negative_spec = translate_spec(spec)
    negative = _write_like(prompt, negative_spec) if negative_spec is not None else ""
    if negative_prompt.strip():
        negative = ", ".join(x for x in (negative_prompt.strip(), negative) if x)
    return Oracle(_write_like(prompt, target_spec), negative, drifts_of(spec))


def _write_like(prompt: str, spec: Spec) -> str:
    """Write `spec` in the target dialect, keeping the clause order of `prompt` where it can."""
    text = write(spec, TARGET)
    head, *clauses = re.split(r" (?=on the |at the |in the |on an? \w+ background|by )", text)
    low = prompt.lower()
    clauses.sort(key=lambda c: low.find(c) if low.find(c) >= 0 else len(low) + 1)
    return " ".join([head] + clauses)


# ---------------------------------------------------------------------------------------------- prompts

@functools.lru_cache(maxsize=1 << 18)
def split_of(spec: Spec) -> str:
    """train or heldout, by a hash of what the prompt means (a quarter is held out). Cached by spec (frozen, so
    hashable): toy-t5's build and its test ask for a few hundred thousand specs, mostly repeats, and the key's
    string and sha256 were a quarter of that test's time."""
    digest = hashlib.sha256(spec.key().encode()).digest()
    return "heldout" if digest[0] % 4 == 0 else "train"


def random_spec(rng: random.Random, split: str | None = None) -> Spec:
    """A source-dialect prompt's spec: shape and colour always said, the rest said or left out. Colour and size
    are said with any word of their class, uniformly; `split="train"` never picks a HELDOUT_WORDS member."""
    fill = rng.choice([None, "solid", "striped", "dotted", "outlined", "artist-striped", "artist-dotted"])
    artist = fill is not None and fill.startswith("artist-")
    spec = Spec(shape=rng.choice(SHAPES), colour=rng.choice(NAMED_COLOURS),
                size=rng.choice([None, "small", "large"]), position=rng.choice(POSITIONS[1:] + (None,)),
                fill=fill.split("-")[1] if artist else fill, background=rng.choice([None, *BACKGROUNDS]),
                artist=artist)
    return replace(spec, colour_word=class_member(rng, SOURCE.colours, spec.colour, split),
                   size_word=class_member(rng, SOURCE.sizes, spec.size, split))


def class_member(rng: random.Random, table: dict[str, str], value: str | None, split: str | None,
                 dialect: Dialect = SOURCE) -> str | None:
    """A word of `value`'s class in `dialect` (`table`: its colours or sizes), uniformly (never a HELDOUT_WORDS
    member for `split="train"`): None for the class's first word, else the member."""
    if value is None:
        return None
    first, *members = dialect.words(table, value)
    word = rng.choice([first] + [m for m in members if split != "train" or m not in HELDOUT_WORDS])
    return None if word == first else word


def world_words() -> frozenset[str]:
    """Every word a prompt of any dialect can say, "a" and "the" included: what is none of them is outside."""
    words = set(SHAPES) | set(COLOURS) | set(SIZES) | set(FILLS) | set(BACKGROUNDS) | set(POSITIONS)
    words |= {"a", "an", "shape", "on", "background"} | {w for p in _POSITION_WORDS.values() for w in p.split()}
    for d in DIALECTS.values():
        for table in (d.colours, d.sizes, d.fills):
            words |= set(table.values()) | {m for w in table.values() for m in d.synonyms.get(w, ())}
        words |= {w for phrase in d.artists for w in phrase.split()}
    return frozenset(words)


@functools.cache
def outside_words(split: str | None = None) -> tuple[str, ...]:
    """Words from outside the toy world: the whole words among the first 30,000 merges of CLIP's BPE
    vocabulary (the commonest English of image captions: "fox", "snow", "masterpiece", "8k"), less every
    word a world prompt can say; `split=None` gives all of them. A dressed prompt (`dress`) of the train split
    says only the three quarters whose hash is not 0 mod 4, of the held-out split only the rest, so what an
    adapter keeps of them on held-out prompts is what it keeps of words it never met in training."""
    from bridge.syntax.tokens import _clip_vocab_and_merges

    if split not in (None, "train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    _, merges = _clip_vocab_and_merges()
    words = ("".join(m)[:-4] for m in merges[:30_000] if m[1].endswith("</w>"))
    inside = world_words()
    every = tuple(w for w in words if 2 <= len(w) <= 12 and w.isalnum() and w.isascii() and not w.isdigit()
                  and w not in inside)
    if split is None:
        return every
    return tuple(w for w in every if (hashlib.sha256(w.encode()).digest()[0] % 4 == 0) == (split == "heldout"))


def outside_text(rng: random.Random, split: str | None = None) -> str:
    """Text outside the world: one to three comma-separated parts of one to three `outside_words(split)`."""
    words = outside_words(split)
    return ", ".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3)))


def dress(rows: list[dict], share: float, seed: int, split: str) -> list[dict]:
    """`rows` (of `generate_prompts`) with text from outside the world around `share` of their prompts, and the
    same text around their oracles: comma-separated parts before, after or both ("masterpiece, 8k, a crimson
    circle, fox in the snow"), as a user's prompt carries quality tags, objects and styles the grammar lacks. A
    correct rewrite keeps them (#40 item 2); each dressed row lists them under `outside`. Seeded apart from the
    rows, so `share=0` returns them unchanged."""
    def one(row: dict, rng: random.Random) -> dict:
        before, after = outside_around(rng, split)
        return dict(row, prompt=wrap(before, row["prompt"], after), oracle=wrap(before, row["oracle"], after),
                    outside=re.findall(r"[a-z0-9]+", f"{before} {after}"))

    return _change_share(rows, share, random.Random(f"toyworld-outside-{seed}-{split}"), one, "dressed")


def outside_around(rng: random.Random, split: str | None = None) -> tuple[str, str]:
    """(before, after): `outside_text` before a prompt (70%), after it, or both; never neither."""
    before = outside_text(rng, split) if rng.random() < 0.7 else ""
    after = outside_text(rng, split) if not before or rng.random() < 0.5 else ""
    return before, after


def with_clause(text: str, clause: str, rng: random.Random) -> str:
    """`text` (a caption: head, then clauses) with `clause` put among its clauses at random, where a source
    prompt says an artist's name ("a navy triangle by bridget riley at the top")."""
    head, *clauses = _CLAUSE.split(text)
    clauses.insert(rng.randint(0, len(clauses)), clause)
    return " ".join([head, *clauses])


def wrap(before: str, text: str, after: str) -> str:
    """`text` with comma-separated parts before and after it (either may be empty)."""
    return ", ".join(x for x in (before, text, after) if x)


def _change_share(rows: list[dict], share: float, rng: random.Random, change, what: str) -> list[dict]:
    """`rows` with `change(row, rng)` applied to about `share` of them, drawn with `rng` (a change that returns
    None leaves its row as it was): what `dress` and `weave` share."""
    if not 0 <= share <= 1:
        raise ValueError(f"the {what} share must be in [0, 1], got {share}")
    return [(change(row, rng) or row) if rng.random() < share else row for row in rows]


SYNTAX = ("weight", "emphasis", "head", "clause", "break", "commas", "lora")
_CLAUSE = re.compile(r" (?=on the |at the |in the |on an? \w+ background|by )")  # where a caption's clauses start


def weave(rows: list[dict], share: float, seed: int) -> list[dict]:
    """`rows` (of `generate_prompts`) with A1111 syntax in `share` of their prompts, and the same syntax at the
    same places in their oracles: one to three of SYNTAX, each listed under the row's `syntax`. A weight on the
    colour word ("a big (crimson:1.2) circle" / "a large (red:1.2) circle"), emphasis on the shape ("((circle))"),
    a weight on the whole head, a weight on the position clause, BREAK between the head and its clauses, the
    clauses as comma-separated parts, a LoRA tag at the end (the prompt's only: the oracle drops it, as migrating
    to another model does). The weights are mild (1.1 to 1.3), as users write them. A correct rewrite changes the
    words and keeps every piece of syntax where it is (#40 item 3). Seeded apart from the rows, so `share=0`
    returns them unchanged."""
    def one(row: dict, rng: random.Random) -> dict | None:
        kinds, weights, lora = draw_syntax(rng)
        # The oracle leaves the LoRA tag out, as a migration does: an SD1 LoRA cannot load in the target.
        woven = [weave_text(row["prompt"], kinds, weights, lora), weave_text(row["oracle"], kinds, weights, "")]
        if None in woven:  # a prompt without the part a kind needs (a clause to weight or to BREAK before)
            return None
        return dict(row, prompt=woven[0], oracle=woven[1], syntax=kinds)

    return _change_share(rows, share, random.Random(f"toyworld-syntax-{seed}"), one, "woven")


def draw_syntax(rng: random.Random) -> tuple[list[str], dict[str, float], str]:
    """(kinds, weights, LoRA tag) for `weave_text`: one to three of SYNTAX, a mild weight (1.1 to 1.3) for each."""
    kinds = rng.sample(SYNTAX, rng.randint(1, 3))
    weights = {k: rng.choice((1.1, 1.2, 1.3)) for k in kinds}
    lora = f"<lora:{rng.choice(('toy_detail', 'flat_colors', 'shapes_v2'))}:{rng.choice((0.6, 0.7, 0.8))}>"
    return kinds, weights, lora


@functools.cache
def _colour_words() -> frozenset[str]:
    """Every word any dialect has for a colour: where `weave` puts a colour weight."""
    return frozenset(w for d in DIALECTS.values() for value in d.colours for w in d.words(d.colours, value))


def weave_text(text: str, kinds: list[str], weights: dict[str, float], lora: str) -> str | None:
    """`text` (a caption: head, then clauses) with `kinds` of syntax; None where a kind needs a clause or a colour
    word it lacks."""
    head, *clauses = _CLAUSE.split(text)
    words = head.split()
    if "weight" in kinds:
        at = next((i for i, w in enumerate(words) if w in _colour_words()), None)
        if at is None:  # a training caption may leave the colour out (world prompts always say it)
            return None
        words[at] = f"({words[at]}:{weights['weight']})"
    if "emphasis" in kinds:
        words[-1] = f"(({words[-1]}))"
    head = " ".join(words)
    if "head" in kinds:
        head = f"({head}:{weights['head']})"
    if "clause" in kinds:
        at = next((i for i, c in enumerate(clauses) if c.split()[0] in ("on", "at", "in") and
                   not c.endswith("background")), None)
        if at is None:
            return None
        clauses[at] = f"({clauses[at]}:{weights['clause']})"
    if ("break" in kinds or "commas" in kinds) and not clauses:
        return None
    joiner = ", " if "commas" in kinds else " "
    text = head + (" BREAK " if "break" in kinds else joiner) + joiner.join(clauses) if clauses else head
    return f"{text} {lora}" if "lora" in kinds and lora else text


def strip_syntax(text: str) -> str:
    """A woven prompt's words (`weave`): tags, BREAK, brackets and weights left out, commas kept."""
    text = re.sub(r"<[^>]*>|\bBREAK\b|:\s*-?[\d.]+\s*(?=\))|[()\[\]]", " ", text)
    return re.sub(r"\s+", " ", re.sub(r"\s+,", ",", text)).strip()


def strip_outside(text: str) -> str:
    """What `read` understands of a dressed or woven prompt: its comma-separated parts made only of world words."""
    text = strip_syntax(text)
    inside = world_words()
    return ", ".join(p for p in text.split(", ") if p.split() and all(w in inside for w in p.lower().split()))


def unseen_words(prompt: str) -> list[str]:
    """The words of a source prompt that never occur in a training prompt (HELDOUT_WORDS members)."""
    return [w for w in re.findall(r"[a-z]+", prompt.lower()) if w in HELDOUT_WORDS]


def generate_prompts(n: int, seed: int, split: str, drift: str | None = None) -> list[dict]:
    """`n` distinct source-dialect prompts of one split. `drift`: a name from DRIFTS (prompts carrying it),
    "none" (prompts with no drift), or None (a mix: about a quarter without drift)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    if drift not in (None, "none", *DRIFTS):
        raise ValueError(f"unknown drift {drift!r}; choose one of {', '.join(DRIFTS)} or none")
    rng = random.Random(f"toyworld-prompts-{seed}-{split}-{drift}")
    out, seen = [], set()
    for _ in range(n):
        # Decide what this prompt must carry first, then draw until one fits (about 1 in 7 random
        # specs has no drift, so drawing freely would give far fewer than a quarter).
        want = drift if drift is not None else ("none" if rng.random() < 0.25 else "any")
        for _ in range(20000):
            spec = random_spec(rng, split)
            drifts = drifts_of(spec)
            ok = {"none": not drifts, "any": bool(drifts)}.get(want, want in drifts)
            if ok and split_of(spec) == split and (spec.key(), spec.words()) not in seen:
                break
        else:
            break
        seen.add((spec.key(), spec.words()))
        prompt = write(spec, SOURCE, rng)
        o = oracle(prompt)
        out.append({"prompt": prompt, "negative_prompt": "", "drifts": o.drifts, "oracle": o.prompt,
                    "oracle_negative_prompt": o.negative_prompt})
    if len(out) < n:
        raise ValueError(f"the {split} split has only {len(out)} distinct prompts with drift={drift}; ask for fewer")
    return out


def training_caption(dialect: Dialect, rng: random.Random, keep: float = 0.7) -> tuple[str, Scene]:
    """A (caption, scene) pair a model of `dialect` learns from: a random spec with attributes left out at
    random (so the model learns its defaults), realised with that dialect's defaults."""
    spec_values: dict = {}
    for attr, choices in (("shape", SHAPES), ("colour", NAMED_COLOURS), ("size", ("small", "large")),
                          ("position", POSITIONS[1:]), ("background", tuple(BACKGROUNDS))):
        if rng.random() < keep:
            spec_values[attr] = rng.choice(choices)
    if rng.random() < keep:
        spec_values["fill"] = rng.choice(sorted(set(dialect.fills) | dialect.artist_fills()))
        if dialect.artist_phrase(spec_values["fill"], spec_values.get("shape")) and rng.random() < 0.5:
            spec_values["artist"] = True  # only with a shape said: a name's fill depends on it
    spec = Spec(**spec_values)
    return write(spec, dialect, rng), realize(spec, dialect, rng)


def neutral_caption(scene: Scene, rng: random.Random | None = None) -> str:
    return write(Spec(**{a: getattr(scene, a) for a in ATTRIBUTES}), NEUTRAL, rng)


def random_scene(rng: random.Random) -> Scene:
    return Scene(shape=rng.choice(SHAPES), colour=rng.choice(tuple(COLOURS)), size=rng.choice(tuple(SIZES)),
                 position=rng.choice(POSITIONS), fill=rng.choice(FILLS), background=rng.choice(tuple(BACKGROUNDS)))


# ---------------------------------------------------------------------------------------------- drawing

def draw(scene: Scene, seed: int, size: int = IMAGE_SIZE):
    """The ground-truth image of `scene` at `seed`: position, size, rotation, colours and the fill's phase
    jitter with the seed. Painted at 4x and downsampled, so edges are antialiased like a render."""
    import numpy as np
    from PIL import Image

    rs = np.random.default_rng(seed)
    ss = 4
    n = size * ss
    scale = size / IMAGE_SIZE
    r = SIZES[scene.size] * rs.uniform(0.9, 1.1) * scale * ss
    margin = r + 1.5 * scale * ss
    cx, cy = n / 2, n / 2
    offset = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0)}[scene.position]
    cx += offset[0] * (n / 2 - margin)
    cy += offset[1] * (n / 2 - margin)
    cx += rs.uniform(-1.5, 1.5) * scale * ss
    cy += rs.uniform(-1.5, 1.5) * scale * ss
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    angle = rs.uniform(-0.2, 0.2)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)

    def inside(radius: float):
        if scene.shape == "circle":
            return u * u + v * v <= radius * radius
        if scene.shape == "square":
            half = radius * 0.86
            return (np.abs(u) <= half) & (np.abs(v) <= half)
        # equilateral triangle, apex up, inscribed in a circle of 1.15 * radius
        R = radius * 1.15
        return (v <= R / 2) & (np.sqrt(3) * np.abs(u) - v <= R)

    mask = inside(r)
    line = 2.5 * scale * ss
    # Patterns repeat every 6 px: coarse enough for 16x16 latents (a 4 px period did not survive the VAE).
    period = 6 * scale * ss
    pattern = rs.uniform(0, period)
    if scene.fill == "outlined":
        paint = mask & ~inside(r - line)
    elif scene.fill == "striped":
        theta = rs.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4])
        paint = mask & (((xx * math.cos(theta) + yy * math.sin(theta) + pattern) % period) < period / 2)
    elif scene.fill == "dotted":
        px, py = (xx + pattern) % period - period / 2, (yy + pattern) % period - period / 2
        paint = mask & (px * px + py * py <= (1.8 * scale * ss) ** 2)
    else:
        paint = mask
    bg = np.clip(np.array(BACKGROUNDS[scene.background], np.float32) + rs.normal(0, 4, 3), 0, 255)
    fg = np.clip(np.array(COLOURS[scene.colour], np.float32) + rs.normal(0, 10, 3), 0, 255)
    img = np.where(paint[..., None], fg, bg)
    img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    return Image.fromarray(np.round(img).astype(np.uint8), "RGB")


def read_image(image) -> dict:
    """What an image shows, read back from its pixels: the background (median of the border), the shape's
    colour (median of the pixels far from the background), each the nearest palette entry, its position
    (where those pixels lie) and its shape (the outline of those pixels); None where nothing stands out.
    The check behind "the pictures are right"."""
    import numpy as np

    a = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32)
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3),
                             a[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.linalg.norm(a - bg_rgb, axis=-1)
    far = dist > 60
    shape_pixels = int(far.sum())
    if shape_pixels < 4:  # nothing stands out
        return {"background": background, "colour": None, "position": None, "shape": None,
                "shape_pixels": shape_pixels}
    # Thin fills (outlines, dots) are mostly edge pixels blended with the background: read the colour from
    # the third of the shape's pixels that stand out most.
    core = dist >= np.quantile(dist[far], 2 / 3)
    return {"background": background, "colour": _nearest(np.median(a[core], axis=0), COLOURS),
            "position": _position(far), "shape": _shape(far), "shape_pixels": shape_pixels}


def _position(mask) -> str:
    """Where a shape's pixels lie: "center" when their centroid is within 1.9 px of the middle on both axes,
    else the side of the larger offset. A large shape is drawn only 3.5 px off the middle (draw keeps it inside
    the frame) and every shape jitters by up to 1.5 px per axis, so 1.9 px splits the two."""
    import numpy as np

    yy, xx = np.nonzero(mask)
    dx, dy = xx.mean() + 0.5 - IMAGE_SIZE / 2, yy.mean() + 0.5 - IMAGE_SIZE / 2
    if max(abs(dx), abs(dy)) < 1.9:
        return "center"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "bottom" if dy > 0 else "top"


def _shape(mask) -> str:
    """Which shape a mask's pixels outline, from their convex hull (so stripes, dots and outlines read as the
    shape they fill): its area over the circle through its farthest corner from the centroid is ~0.85 for a
    circle, ~0.64 for a square and ~0.5 for a triangle, at any of draw's small rotations; a triangle (apex up)
    is also narrower in its top third than in its bottom third. Cuts from the world's own drawings: right on
    100% of solid and outlined ones, ~80% of striped and ~70% of dotted ones (their hull is ragged)."""
    import numpy as np

    yy, xx = np.nonzero(mask)
    corners = np.unique(np.concatenate([np.stack([xx + dx, yy + dy], 1) for dx in (0, 1) for dy in (0, 1)]), axis=0)
    hull = _hull(corners.tolist())
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(hull, hull[1:] + hull[:1])))
    centre = np.array([xx.mean() + 0.5, yy.mean() + 0.5])
    roundness = area / (math.pi * float(((corners - centre) ** 2).sum(1).max()))
    third = max(1, (yy.max() - yy.min() + 1) // 3)
    top = mask[yy.min(): yy.min() + third].any(0).sum()
    bottom = mask[yy.max() - third + 1: yy.max() + 1].any(0).sum()
    if roundness < 0.55 or (top < 0.6 * bottom and roundness < 0.7):
        return "triangle"
    return "circle" if roundness > 0.75 else "square"


def _hull(points: list) -> list:
    """Convex hull of integer points, counter-clockwise (Andrew's monotone chain)."""
    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    points = sorted(map(tuple, points))
    if len(points) < 3:
        return points
    lower, upper = [], []
    for chain, seq in ((lower, points), (upper, reversed(points))):
        for p in seq:
            while len(chain) >= 2 and turn(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
    return lower[:-1] + upper[:-1]


def _nearest(rgb, palette: dict) -> str:
    return min(palette, key=lambda k: sum((float(x) - y) ** 2 for x, y in zip(rgb, palette[k])))


def describe(image) -> str:
    """A few words for what an image shows (the demo prints them)."""
    seen = read_image(image)
    return f"a {seen['colour'] or 'no visible'} shape on {seen['background']}"
